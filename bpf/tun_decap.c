// IP-in-IP decapsulation for a TUN-mode real server: tc clsact ingress, `sec tc`.
//
// This kernel has no ipip or ip6_tunnel module, so the real server cannot terminate the director's
// tunnel the usual way. This program strips the outer header of IPv4 packets of protocol 4
// (IPv4-in-IPv4) or 41 (IPv6-in-IPv4) and of IPv6 packets whose next header is 41 (IPv6-in-IPv6)
// or 4 (IPv4-in-IPv6), sent to this host's MAC, and hands the inner packet to the stack, which
// delivers it to the VIP configured on lo. Everything else passes untouched.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))

// Newer than this machine's uapi headers (Linux 6.3); the running kernel has them.
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_skb_store_bytes)(void *skb, __u32 offset, const void *from, __u32 len, __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_skb_adjust_room)(void *skb, __s32 len_diff, __u32 mode, __u64 flags) = (void *)BPF_FUNC_skb_adjust_room;

#define bswap16(x) __builtin_bswap16(x)

SEC("tc")
int tun_decap(struct __sk_buff *skb)
{
	__u8 inner;
	__u16 outer_proto;
	__u32 hlen;

	// Frames for another host (bridge flooding) or broadcast are not ours to open.
	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	if (skb->protocol == bswap16(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return TC_ACT_OK;
		if (ip.version != 4 || ip.ihl < 5)
			return TC_ACT_OK;
		// A fragmented outer packet cannot be opened piecewise; the stack drops it as before.
		if (ip.frag_off & bswap16(0x3fff))
			return TC_ACT_OK;
		inner = ip.protocol;
		hlen = ip.ihl * 4;
		outer_proto = ETH_P_IP;
	} else if (skb->protocol == bswap16(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return TC_ACT_OK;
		// Only a tunnel header right after the fixed header (the director adds no extension
		// headers).
		if (ip6.version != 6)
			return TC_ACT_OK;
		inner = ip6.nexthdr;
		hlen = sizeof(ip6);
		outer_proto = ETH_P_IPV6;
	} else {
		return TC_ACT_OK;
	}
	__u64 flags;
	__u16 inner_proto;
	if (inner == IPPROTO_IPIP) {
		flags = BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
		inner_proto = ETH_P_IP;
	} else if (inner == IPPROTO_IPV6) {
		flags = BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
		inner_proto = ETH_P_IPV6;
	} else {
		return TC_ACT_OK;
	}
	if (bpf_skb_adjust_room(skb, -(__s32)hlen, BPF_ADJ_ROOM_MAC, flags) < 0)
		return TC_ACT_SHOT;
	// The Ethernet header stays; its type must name the inner protocol when the families differ.
	if (inner_proto != outer_proto) {
		__u16 type = bswap16(inner_proto);
		if (bpf_skb_store_bytes(skb, 12, &type, sizeof(type), 0) < 0)
			return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
