// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// xvs's frame filter: "steal only what is ours".
//
// Two programs share one filter and one set of maps:
//   xvs_xdp (SEC "xdp"): redirects the frames xvs serves to the AF_XDP socket of the receiving
//                        queue (xsks_map[rx_queue_index]); everything else goes on (XDP_PASS).
//   xvs_tc  (SEC "tc"):  for the AF_PACKET backend. A packet socket sees a copy of every frame
//                        before tc ingress runs, so xvs already has the frame; this program drops
//                        exactly the frames xvs serves so that the kernel does not answer or
//                        forward them as well. Everything else: TC_ACT_OK.
//
// What xvs serves (everything else, ARP, VRRP, ICMP echo, SSH, is left to the kernel):
//   - IPv4/IPv6 TCP/UDP whose (proto, dst addr, dst port) is a virtual service;
//   - TCP/UDP whose dst addr is a FULLNAT local address (return traffic of FULLNAT);
//   - TCP/UDP whose (proto, src addr, src port) is a NAT real server (return traffic of NAT);
//   - ICMP/ICMPv6 errors (unreachable, time exceeded, parameter problem, packet too big) sent to a
//     VIP or a local address, or sent by a NAT real server address.
//
// Fragments of TCP/UDP datagrams (xvs forwards them without reassembly): the first fragment carries
// the ports and is judged as above; when it is xvs's, its datagram (source, destination, protocol,
// identification) is remembered in `frags` for FRAG_NS, and the later fragments, which carry no
// ports, follow it. A later fragment that arrives before its first goes to the kernel. Fragments
// of other protocols go to the kernel.
//
// Addresses are 16 bytes, IPv4 mapped as ::ffff:a.b.c.d (as xvs::types::Addr).
// Up to two VLAN tags (802.1Q, 802.1ad) are skipped. IPv6 extension headers (hop-by-hop, routing,
// destination options) are skipped, up to four; a fragment header after them marks a fragment
// (see above).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>

// The few libbpf helper definitions this file needs (libbpf-dev headers are not required).
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#define bpf_htons(x) __builtin_bswap16(x)
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

#define MAX_QUEUES 256
#define MAX_SERVICES 65536
#define MAX_ADDRS 65536
// Datagrams whose fragments are followed at a time, and for how long after the first (the
// kernel's own reassembly timeout, net.ipv4.ipfrag_time, is 30 s too).
#define MAX_FRAGS 16384
#define FRAG_NS (30ULL * 1000 * 1000 * 1000)

// (proto, address, port): the key of `services` (dst side) and `nat_rs` (src side).
struct xvs_l4_key {
	__u8 addr[16];
	__u16 port; // network byte order
	__u8 proto;
	__u8 pad;
};

// Flags of an address in `addrs`.
#define XVS_ADDR_VIP 1    // a virtual service's address
#define XVS_ADDR_LADDR 2  // a FULLNAT local address
#define XVS_ADDR_NAT_RS 4 // a NAT real server's address
#define XVS_ADDR_LOCAL 8  // one of the director's own addresses

struct xvs_addr_key {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct xvs_l4_key);
	__type(value, __u8);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct xvs_l4_key);
	__type(value, __u8);
} nat_rs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ADDRS);
	__type(key, struct xvs_addr_key);
	__type(value, __u8);
} addrs SEC(".maps");

// A fragmented datagram: the key of `frags`, whose value is when its first fragment was seen.
struct xvs_frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id; // IPv4 identification (16 bits) or IPv6 fragment identification, as on the wire
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FRAGS);
	__type(key, struct xvs_frag_key);
	__type(value, __u64);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define XVS_NH_HOPOPTS 0
#define XVS_NH_ROUTING 43
#define XVS_NH_FRAGMENT 44
#define XVS_NH_DSTOPTS 60

static __always_inline void map_v4(__u8 *out, __be32 a)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &a, 4);
}

static __always_inline int addr_has(const __u8 *a, __u8 flags)
{
	struct xvs_addr_key k;
	__builtin_memcpy(k.addr, a, 16);
	__u8 *v = bpf_map_lookup_elem(&addrs, &k);
	return v && (*v & flags);
}

static __always_inline int l4_in(void *map, const __u8 *a, __u16 port, __u8 proto)
{
	struct xvs_l4_key k;
	__builtin_memcpy(k.addr, a, 16);
	k.port = port;
	k.proto = proto;
	k.pad = 0;
	return bpf_map_lookup_elem(map, &k) != 0;
}

// Whether xvs serves this frame. `data`..`data_end` is the frame from its Ethernet header.
static __always_inline int xvs_ours(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	__u16 proto = eth->h_proto;
	void *p = eth + 1;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		// VLAN tag: TCI (2), inner ethertype (2).
		if (p + 4 > data_end)
			return 0;
		proto = *(__u16 *)(p + 2);
		p += 4;
	}

	__u8 src[16], dst[16];
	__u8 l4proto;
	void *l4;
	// Set for a fragment: its datagram's identification, and whether it is a later fragment.
	int frag = 0, later = 0;
	__u32 frag_id = 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = p;
		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return 0;
		map_v4(src, ip->saddr);
		map_v4(dst, ip->daddr);
		l4proto = ip->protocol;
		l4 = p + ip->ihl * 4;
		// MF set or a non-zero offset.
		if (ip->frag_off & bpf_htons(0x3fff)) {
			frag = 1;
			later = (ip->frag_off & bpf_htons(0x1fff)) != 0;
			frag_id = ip->id;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = p;
		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return 0;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		l4proto = ip6->nexthdr;
		l4 = ip6 + 1;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (l4proto != XVS_NH_HOPOPTS && l4proto != XVS_NH_ROUTING && l4proto != XVS_NH_DSTOPTS)
				break;
			__u8 *ext = l4;
			if ((void *)(ext + 2) > data_end)
				return 0;
			l4proto = ext[0];
			l4 = ext + (ext[1] + 1) * 8;
		}
		if (l4proto == XVS_NH_FRAGMENT) {
			// Next header (1), reserved (1), offset and M flag (2), identification (4).
			__u8 *fh = l4;
			if ((void *)(fh + 8) > data_end)
				return 0;
			frag = 1;
			later = (((fh[2] << 8) | fh[3]) & 0xfff8) != 0;
			__builtin_memcpy(&frag_id, fh + 4, 4);
			l4proto = fh[0];
			l4 = fh + 8;
		}
	} else {
		return 0;
	}

	struct xvs_frag_key fk;
	if (frag) {
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return 0;
		__builtin_memset(&fk, 0, sizeof(fk));
		__builtin_memcpy(fk.src, src, 16);
		__builtin_memcpy(fk.dst, dst, 16);
		fk.id = frag_id;
		fk.proto = l4proto;
		if (later) {
			__u64 *seen = bpf_map_lookup_elem(&frags, &fk);
			return seen && bpf_ktime_get_ns() - *seen < FRAG_NS;
		}
	}

	if (l4proto == IPPROTO_TCP || l4proto == IPPROTO_UDP) {
		// Source and destination ports are the first four bytes of both headers.
		__u16 *ports = l4;
		if ((void *)(ports + 2) > data_end)
			return 0;
		// A real server's packets to the director itself (health checks, management) are the
		// kernel's; only those on their way to a client are NAT return traffic.
		int ours = l4_in(&services, dst, ports[1], l4proto) || addr_has(dst, XVS_ADDR_LADDR) ||
			   (l4_in(&nat_rs, src, ports[0], l4proto) && !addr_has(dst, XVS_ADDR_LOCAL));
		if (ours && frag) {
			__u64 now = bpf_ktime_get_ns();
			bpf_map_update_elem(&frags, &fk, &now, 0);
		}
		return ours;
	}
	__u8 *icmp = l4;
	if ((void *)(icmp + 1) > data_end)
		return 0;
	int error = 0;
	if (l4proto == IPPROTO_ICMP)
		error = icmp[0] == 3 || icmp[0] == 11 || icmp[0] == 12;
	else if (l4proto == IPPROTO_ICMPV6)
		error = icmp[0] >= 1 && icmp[0] <= 4;
	if (!error)
		return 0;
	return addr_has(dst, XVS_ADDR_VIP | XVS_ADDR_LADDR) ||
	       (addr_has(src, XVS_ADDR_NAT_RS) && !addr_has(dst, XVS_ADDR_LOCAL));
}

SEC("xdp")
int xvs_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (!xvs_ours(data, data_end))
		return XDP_PASS;
	// No socket on this queue (yet): the kernel keeps the frame rather than losing it.
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

SEC("tc")
int xvs_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	return xvs_ours(data, data_end) ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
