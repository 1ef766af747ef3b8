// The ceiling of the performance lab: the least an XDP forwarder can do. Every frame arriving on
// the interface this is attached to gets the next hop's MACs and is bpf_redirect()ed out of
// `redir_cfg.ifindex`; no parsing, no lookup. `bench/perf.rs` attaches it to the director's
// client side (native mode) and points it at the server side.
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;

// Keep in step with src/perf/redir.rs: destination MAC, source MAC, out ifindex.
struct redir_cfg {
	__u8 dst[6];
	__u8 src[6];
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redir_cfg);
} redir_cfg SEC(".maps");

SEC("xdp")
int xvs_redir(struct xdp_md *ctx)
{
	__u8 *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct redir_cfg *c = bpf_map_lookup_elem(&redir_cfg, &key);
	if (!c || d + 14 > end)
		return XDP_PASS;
	__builtin_memcpy(d, c->dst, 6);
	__builtin_memcpy(d + 6, c->src, 6);
	return bpf_redirect(c->ifindex, 0);
}

char _license[] SEC("license") = "GPL";
