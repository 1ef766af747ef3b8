// xvs gen: the in-kernel traffic generator, run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES.
//
// Userspace (src/gen) builds a template frame and puts it, with precomputed partial checksums, in
// `gen_cfg`. The kernel runs this program once per frame it sends; the program rewrites the headers
// from the template every time (live-frame pages are recycled without being reset, and a forwarder
// on the path may have rewritten them), varies the flow (source address low 16 bits and source
// port), writes a CLOCK_MONOTONIC timestamp at the start of the L4 payload for the sink's latency
// figures, finishes the IP and L4 checksums incrementally and returns XDP_TX, which transmits the
// frame out of the interface named in the test run's context.
//
// Pacing and the frame budget live here too, per CPU (each generator thread is pinned to its
// own): a test run costs tens of milliseconds to set up, so userspace makes few, long runs and
// this program decides frame by frame whether one is due. A frame not yet due, or beyond the
// budget, is dropped (XDP_DROP only recycles the live-frame page), so that paced frames leave
// evenly spaced instead of in bursts of a whole run's worth.
//
// Checksum arithmetic is done on 16-bit words as they lie in memory (one's complement sums are
// byte-order independent), so userspace sums its template with native-endian loads too.
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;

#define HDR_MAX 128

// Keep in step with `GenCfg` in src/perf/mod.rs.
struct gen_cfg {
	__u8 hdr[HDR_MAX]; // template: Ethernet, IP and L4 headers
	__u32 hdr_len;     // bytes of `hdr` in use (a multiple of 8 is not required)
	__u32 flows;       // 0: a new random flow every frame; else flows 0..flows-1
	__u32 sequential;  // 1: cycle through the flows in order (fills a table); 0: random
	__u32 saddr_off;   // offset of the varied 16-bit word of the source address
	__u32 sport_off;   // offset of the source port
	__u32 ts_off;      // offset of the 8-byte timestamp; 0: none (frame too short)
	__u32 ip_csum_off; // offset of the IPv4 header checksum; 0: none (IPv6)
	__u32 l4_csum_off; // offset of the UDP/TCP checksum
	__u32 ip_sum;      // IPv4 header sum without the checksum and the varied word
	__u32 l4_sum;      // pseudo header + L4 sum without checksum, varied words and timestamp
	__u32 saddr_base;  // first value of the varied address word (host order)
	__u32 udp_zero_ok; // 1: a computed UDP checksum of 0 is sent as 0xffff (always, for UDP)
	__u32 ifindex;     // the interface the test runs transmit on; frames from elsewhere pass
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_cfg);
} gen_cfg SEC(".maps");

// Keep in step with `Pace` in src/perf/mod.rs.
struct gen_pace {
	__u64 next_ns;     // when the next frame is due (bpf_ktime_get_ns); 0: at once
	__u64 interval_ns; // between two frames; 0: unpaced
	__u64 sent;        // frames transmitted
	__u64 limit;       // frames to transmit in all
};

// A frame more than this many intervals late restarts the schedule from now: the slots the CPU
// was busy elsewhere for are skipped, not sent back to back.
#define MAX_LAG 8

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_pace);
} gen_pace SEC(".maps");

// Per-CPU flow counter for sequential mode: each generator thread runs on its own CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

static inline __u32 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

SEC("xdp")
int xvs_gen(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct gen_cfg *c = bpf_map_lookup_elem(&gen_cfg, &key);
	struct gen_pace *pc = bpf_map_lookup_elem(&gen_pace, &key);
	if (!c || !pc)
		return XDP_ABORTED;
	// Userspace also attaches this program to the namespace's loopback, only to keep it in the
	// kernel's XDP dispatcher between test runs (each run that has to add it there and take it
	// out again waits for two RCU grace periods, tens of milliseconds): a frame that really
	// arrives there is none of our business.
	if (ctx->ingress_ifindex != c->ifindex)
		return XDP_PASS;
	if (pc->sent >= pc->limit)
		return XDP_DROP;
	if (pc->interval_ns) {
		__u64 now = bpf_ktime_get_ns();
		if (now < pc->next_ns)
			return XDP_DROP;
		if (now - pc->next_ns > MAX_LAG * pc->interval_ns)
			pc->next_ns = now;
		pc->next_ns += pc->interval_ns;
	}
	pc->sent += 1;

	// Headers from the template, 8 bytes at a time (the template is zero-padded to HDR_MAX).
	__u32 n = c->hdr_len;
#pragma unroll
	for (int i = 0; i < HDR_MAX / 8; i++) {
		if (i * 8 >= n)
			break;
		if (data + i * 8 + 8 > end)
			return XDP_ABORTED;
		*(__u64 *)(data + i * 8) = *(__u64 *)(c->hdr + i * 8);
	}

	// The flow: (address word, source port), both in host order.
	__u32 a, p;
	if (c->flows == 0) {
		__u32 r = bpf_get_prandom_u32();
		a = r & 0xffff;
		p = 1024 + (r >> 16) % 64512;
	} else {
		__u32 i;
		if (c->sequential) {
			__u64 *s = bpf_map_lookup_elem(&gen_seq, &key);
			if (!s)
				return XDP_ABORTED;
			i = *s % c->flows;
			*s += 1;
		} else {
			i = bpf_get_prandom_u32() % c->flows;
		}
		a = (c->saddr_base + i / 64512) & 0xffff;
		p = 1024 + i % 64512;
	}
	__u16 aw = __builtin_bswap16(a), pw = __builtin_bswap16(p);

	__u32 so = c->saddr_off & (HDR_MAX - 1), po = c->sport_off & (HDR_MAX - 1);
	if (data + so + 2 > end || data + po + 2 > end)
		return XDP_ABORTED;
	*(__u16 *)(data + so) = aw;
	*(__u16 *)(data + po) = pw;

	__u32 l4 = c->l4_sum + aw + pw;
	__u32 to = c->ts_off & 0x7ff;
	if (to) {
		if (data + to + 8 > end)
			return XDP_ABORTED;
		__u64 ts = bpf_ktime_get_ns();
		__builtin_memcpy(data + to, &ts, 8);
		__u16 *w = (__u16 *)(data + to);
		l4 += (__u32)w[0] + w[1] + w[2] + w[3];
	}

	__u32 io = c->ip_csum_off & (HDR_MAX - 1);
	if (io) {
		if (data + io + 2 > end)
			return XDP_ABORTED;
		*(__u16 *)(data + io) = ~fold(c->ip_sum + aw) & 0xffff;
	}
	__u32 lo = c->l4_csum_off & (HDR_MAX - 1);
	if (lo) {
		if (data + lo + 2 > end)
			return XDP_ABORTED;
		__u16 cs = ~fold(l4) & 0xffff;
		if (cs == 0 && c->udp_zero_ok)
			cs = 0xffff;
		*(__u16 *)(data + lo) = cs;
	}
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
