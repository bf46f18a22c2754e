// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup_skb programs that count the traffic of hostNetwork pods per pod.
 *
 * A hostNetwork pod has no veth of its own: its packets leave through the
 * node's interfaces with the node's address, so neither an interface nor an
 * IP tells two such pods apart. The socket does: every skb that belongs to
 * a local socket carries that socket's cgroup v2, and the kernel runs the
 * programs attached to that cgroup and to its ancestors. The agent attaches
 * these two programs (with bpf_link, so they die with the agent) to each
 * hostNetwork pod's cgroup directory (kubepods/<qos>/pod<uid>) and puts
 * that directory's id into `watched`; the programs find which watched
 * ancestor the socket lives under and count per (that cgroup, 5-tuple,
 * direction).
 *
 * Both programs only observe: they always return 1 (let the packet pass).
 * The skb starts at the network header here (there is no Ethernet header
 * on this hook), and skb->len is the IP packet's length; a GSO packet on
 * egress is one skb (one "packet") as it is on the veth's own counters.
 * Only packets that belong to a local socket reach these hooks: forwarded
 * traffic and packets dropped before socket lookup are not counted. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "orb8_common.bpf.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMPV6 58
/* The deepest cgroup level searched for a watched ancestor. kubepods pods sit
 * at level 2 (Guaranteed) or 3 (kubepods/<qos>/pod<uid>); under a systemd
 * slice, or on a hybrid host's unified mount, a few more. */
#define MAX_CGROUP_LEVEL 8
#define CGROUP_SKB_PASS 1

/* Mirrored by HOST_FLOW_KEY in orb8_agent/dataplane/hostflows.py. */
struct host_flow_key {
	__u64 cgroup_id; /* the watched (pod) cgroup the socket is under */
	__u8 saddr[16];  /* IPv4 uses the first 4 bytes, the rest stays zero */
	__u8 daddr[16];
	__u16 sport;     /* host byte order; 0 for ICMP and non-first fragments */
	__u16 dport;     /* for ICMP/ICMPv6: type << 8 | code */
	__u8 proto;      /* IPPROTO_* */
	__u8 family;     /* 4 or 6 */
	__u8 direction;  /* ORB8_DIR_*, relative to the pod: egress = it sent */
	__u8 pad;
};

enum host_flow_stat {
	HOST_STAT_NOT_IP = 0, /* neither IPv4 nor IPv6 */
	HOST_STAT_MALFORMED,  /* truncated headers */
	HOST_STAT_UNWATCHED,  /* no watched ancestor (attached but not watched yet) */
	HOST_STAT_MAP_FULL,   /* new flow could not be inserted */
	HOST_STAT_MAX,
};

const volatile __u32 max_level = MAX_CGROUP_LEVEL;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct host_flow_key);
	__type(value, struct flow_value);
} host_flows SEC(".maps");

/* The pod cgroups the agent attached to: cgroup id → 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOST_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} host_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&host_stats, &idx);

	/* per-CPU slot: no other CPU writes it, a plain add is enough */
	if (v)
		*v += 1;
}

/* The id of the shallowest watched cgroup on the socket's path to the root,
 * or 0. Searching by level (not "the socket's own cgroup") lets one attach
 * point cover every container of the pod, including ones started later. */
static __always_inline __u64 watched_ancestor(struct __sk_buff *skb)
{
	for (int level = 1; level <= MAX_CGROUP_LEVEL; level++) {
		__u64 id;

		if (level > max_level)
			break;
		id = bpf_skb_ancestor_cgroup_id(skb, level);
		if (!id)
			break; /* above the socket's own level */
		if (bpf_map_lookup_elem(&watched, &id))
			return id;
	}
	return 0;
}

static __always_inline int parse(struct __sk_buff *skb, struct host_flow_key *key,
				 __u8 *tcp_flags)
{
	__u32 l4_off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		if (ip.ihl < 5)
			return -1;
		key->family = 4;
		key->proto = ip.protocol;
		__builtin_memcpy(key->saddr, &ip.saddr, 4);
		__builtin_memcpy(key->daddr, &ip.daddr, 4);
		/* a non-first fragment has no L4 header: count it without ports */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;
		l4_off = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		key->family = 6;
		/* extension headers are rare on socket traffic; such a packet is
		 * counted under its first next-header value without ports */
		key->proto = ip6.nexthdr;
		__builtin_memcpy(key->saddr, &ip6.saddr, 16);
		__builtin_memcpy(key->daddr, &ip6.daddr, 16);
		l4_off = sizeof(ip6);
	} else {
		return 1;
	}

	if (key->proto == IPPROTO_TCP) {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)))
			return -1;
		key->sport = bpf_ntohs(tcp.source);
		key->dport = bpf_ntohs(tcp.dest);
		/* byte 13 of the TCP header holds the flags */
		*tcp_flags = ((__u8 *)&tcp)[13] & 0x1f;
	} else if (key->proto == IPPROTO_UDP) {
		struct udphdr udp;

		if (bpf_skb_load_bytes(skb, l4_off, &udp, sizeof(udp)))
			return -1;
		key->sport = bpf_ntohs(udp.source);
		key->dport = bpf_ntohs(udp.dest);
	} else if (key->proto == IPPROTO_ICMP || key->proto == IPPROTO_ICMPV6) {
		__u8 tc[2];

		if (bpf_skb_load_bytes(skb, l4_off, tc, sizeof(tc)))
			return -1;
		key->dport = (__u16)tc[0] << 8 | tc[1];
	}
	return 0;
}

static __always_inline int count(struct __sk_buff *skb, __u8 direction)
{
	struct host_flow_key key = {};
	struct flow_value *val;
	__u8 tcp_flags = 0;
	__u64 now;
	int rc;

	key.cgroup_id = watched_ancestor(skb);
	if (!key.cgroup_id) {
		stat_inc(HOST_STAT_UNWATCHED);
		return CGROUP_SKB_PASS;
	}
	rc = parse(skb, &key, &tcp_flags);
	if (rc) {
		stat_inc(rc > 0 ? HOST_STAT_NOT_IP : HOST_STAT_MALFORMED);
		return CGROUP_SKB_PASS;
	}
	key.direction = direction;

	now = bpf_ktime_get_coarse_ns();
	val = bpf_map_lookup_elem(&host_flows, &key);
	if (!val) {
		struct flow_value init = {
			.first_seen_ns = now,
			.last_seen_ns = now,
		};

		/* NOEXIST: of two CPUs racing on a new flow one inserts, the
		 * other's update fails with EEXIST; both then find it below */
		bpf_map_update_elem(&host_flows, &key, &init, BPF_NOEXIST);
		val = bpf_map_lookup_elem(&host_flows, &key);
		if (!val) {
			stat_inc(HOST_STAT_MAP_FULL);
			return CGROUP_SKB_PASS;
		}
	}
	__sync_fetch_and_add(&val->bytes, skb->len);
	__sync_fetch_and_add(&val->packets, 1);
	val->last_seen_ns = now;
	if (tcp_flags && (val->tcp_flags & tcp_flags) != tcp_flags)
		__sync_fetch_and_or(&val->tcp_flags, tcp_flags);
	return CGROUP_SKB_PASS;
}

SEC("cgroup_skb/ingress")
int orb8_hostflows_ingress(struct __sk_buff *skb)
{
	return count(skb, ORB8_DIR_INGRESS);
}

SEC("cgroup_skb/egress")
int orb8_hostflows_egress(struct __sk_buff *skb)
{
	return count(skb, ORB8_DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
