// xvs sink: counts and drops the generator's traffic where the real servers would receive it.
//
// Two entry points over one parser: `xvs_sink_tc` (tc clsact ingress, the cheapest sink for
// forwarders that emit skbs: AF_XDP copy-mode TX, AF_PACKET, kernel routing) and `xvs_sink_xdp`
// (native XDP, needed behind an XDP_REDIRECT forwarder, which only reaches a veth peer that runs
// NAPI). UDP and TCP over IPv4 or IPv6, also inside an IPIP or 6in4 tunnel (TUN method), are counted
// and dropped; everything else (ARP, neighbour discovery) passes, so the director can still resolve
// its neighbours. When the L4 payload starts with a plausible bpf_ktime_get_ns() timestamp written
// by `xvs gen`, the one-way latency goes into a per-CPU histogram of 256 ns buckets.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;

// Keep in step with src/perf/sink.rs.
#define LAT_BUCKETS 8192
#define LAT_SHIFT 8
#define STAT_PACKETS 0
#define STAT_BYTES 1
#define STAT_STAMPED 2

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} sink_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LAT_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} sink_lat SEC(".maps");

static inline void bump(__u32 k, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&sink_stats, &k);
	if (p)
		*p += v;
}

// 1: counted (drop it), 0: not ours (pass it).
static inline int sink(__u8 *d, __u8 *end)
{
	if (d + ETH_HLEN > end)
		return 0;
	__u16 proto = *(__u16 *)(d + 12);
	__u8 *ip = d + ETH_HLEN, *l4;
	__u8 l4p;
	if (proto == __builtin_bswap16(ETH_P_IP)) {
		if (ip + 20 > end)
			return 0;
		l4p = ip[9];
		l4 = ip + (ip[0] & 0xf) * 4;
		if (l4p == IPPROTO_IPIP) { // TUN: IPv4 in IPv4
			ip = l4;
			if (ip + 20 > end)
				return 0;
			l4p = ip[9];
			l4 = ip + (ip[0] & 0xf) * 4;
		} else if (l4p == IPPROTO_IPV6) { // TUN: IPv6 in IPv4
			ip = l4;
			if (ip + 40 > end)
				return 0;
			l4p = ip[6];
			l4 = ip + 40;
		}
	} else if (proto == __builtin_bswap16(ETH_P_IPV6)) {
		if (ip + 40 > end)
			return 0;
		l4p = ip[6];
		l4 = ip + 40;
	} else {
		return 0;
	}
	__u32 hl;
	if (l4p == IPPROTO_UDP) {
		hl = 8;
	} else if (l4p == IPPROTO_TCP) {
		if (l4 + 20 > end)
			return 0;
		hl = (l4[12] >> 4) * 4;
	} else {
		return 0;
	}
	bump(STAT_PACKETS, 1);
	bump(STAT_BYTES, end - d);
	__u8 *p = l4 + (hl & 0x3c);
	if (p + 8 > end)
		return 1;
	__u64 ts;
	__builtin_memcpy(&ts, p, 8);
	__u64 now = bpf_ktime_get_ns();
	// Not a timestamp of ours unless it is in the last 10 s.
	if (ts == 0 || ts > now || now - ts > 10000000000ULL)
		return 1;
	__u64 b = (now - ts) >> LAT_SHIFT;
	__u32 k = b >= LAT_BUCKETS ? LAT_BUCKETS - 1 : b;
	__u64 *h = bpf_map_lookup_elem(&sink_lat, &k);
	if (h)
		*h += 1;
	bump(STAT_STAMPED, 1);
	return 1;
}

SEC("tc")
int xvs_sink_tc(struct __sk_buff *skb)
{
	return sink((void *)(long)skb->data, (void *)(long)skb->data_end) ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("xdp")
int xvs_sink_xdp(struct xdp_md *ctx)
{
	return sink((void *)(long)ctx->data, (void *)(long)ctx->data_end) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
