// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc classifier that aggregates traffic per flow inside the kernel.
 *
 * It only observes: every path returns TC_ACT_UNSPEC so the next filter or
 * the default action decides the packet's fate. Headers are copied out with
 * direct packet access when they are in the linear area and with
 * bpf_skb_load_bytes() when they are not (paged or GSO skbs), so a packet
 * is never judged malformed just because of how its memory is laid out.
 * Per-packet work is one hash lookup on a family-specific key (20 bytes for
 * IPv4, 44 for IPv6), one inlined array load (the flow-filter gate; more
 * lookups only while some interface on the node has a filter) and two atomic adds (a third when new TCP flags
 * appear). The clock is read when a flow is inserted and then at most once a
 * jiffy per flow: the per-packet test is a load of jiffies, which the JIT
 * inlines. Anything that is not a flow (non-IP, malformed) only bumps a
 * per-CPU counter. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "orb8_common.bpf.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
/* 802.1Q, or QinQ (802.1ad outer + 802.1Q inner); deeper stacks are not IP to us. */
#define MAX_VLAN_TAGS 2
#define VLAN_HLEN 4
#define IPV6_HLEN 40
/* Enough for hop-by-hop + routing + fragment + destination options. */
#define MAX_IPV6_EXT 4
/* Largest header offset we ever read at: bounds pointer math for the verifier. */
#define MAX_HDR_OFF 4096
/* IPv6 protocol numbers live in UAPI #defines, which vmlinux.h lacks. */
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60

const volatile struct flows_config cfg = {
	.sample_rate = 1,
	.track_ingress = 1,
	.track_egress = 1,
};

/* LRU: when more flows arrive between two reads than fit, the oldest go
 * (counted by user space as inserted but never read) rather than the newest
 * being refused. User space drains both maps on every read. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct flow4_key);
	__type(value, struct flow_value);
} flows4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow6_key);
	__type(value, struct flow_value);
} flows6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} flow_stats SEC(".maps");

/* Flow filters (layout and meaning in orb8_common.bpf.h). Whether an
 * interface has a filter at all is one bit, bit ifindex % 64 of word
 * ifindex / 64, for ifindexes below ORB8_FILTER_BITMAP_IFS: an array load the
 * JIT inlines, so an unfiltered interface pays that and nothing more, also
 * on a node where other interfaces filter. Larger ifindexes (a node that
 * has created that many interfaces) go by the gate, how many interfaces
 * have a filter, and then the hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ORB8_FILTER_BITMAP_IFS / 64);
	__type(key, __u32);
	__type(value, __u64);
} flow_filter_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} flow_filter_gate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* ifindex */
	__type(value, struct flow_filter_if);
} flow_filter_ifs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_filter_port_key);
	__type(value, __u32); /* clause mask */
} flow_filter_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_filter_cidr4_key);
	__type(value, __u32);
} flow_filter_cidr4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_filter_cidr6_key);
	__type(value, __u32);
} flow_filter_cidr6 SEC(".maps");

/* Copy a header into *ptr. Fast path: direct packet access when the bytes
 * sit in the linear area (the usual case). Slow path: bpf_skb_load_bytes()
 * for paged skbs. Non-zero means the packet is shorter than the header. */
#define LOAD_HDR(skb, off, ptr)                                                \
	({                                                                     \
		void *__data = (void *)(long)(skb)->data;                      \
		void *__end = (void *)(long)(skb)->data_end;                   \
		__u32 __off = (off);                                           \
		int __err = 0;                                                 \
		if (__off <= MAX_HDR_OFF &&                                    \
		    __data + __off + sizeof(*(ptr)) <= __end)                  \
			__builtin_memcpy((ptr), __data + __off, sizeof(*(ptr))); \
		else                                                           \
			__err = bpf_skb_load_bytes((skb), __off, (ptr),        \
						   sizeof(*(ptr)));            \
		__err;                                                         \
	})

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&flow_stats, &idx);

	/* per-CPU slot: no other CPU writes it, a plain add is enough */
	if (v)
		*v += 1;
}

/* Returns 0 when the L4 header fits and fills ports/flags; negative when the
 * packet claims a protocol whose header is cut short. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u8 proto,
				    __u16 *sport, __u16 *dport, __u64 *tcp_flags)
{
	switch (proto) {
	case IPPROTO_TCP: {
		struct tcphdr th;

		if (LOAD_HDR(skb, off, &th))
			return -1;
		/* a data offset below 5 words cannot hold a TCP header */
		if (th.doff < 5)
			return -1;
		*sport = bpf_ntohs(th.source);
		*dport = bpf_ntohs(th.dest);
		/* byte 13 holds CWR..FIN; read it whole instead of bitfields */
		*tcp_flags = ((__u8 *)&th)[13];
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr uh;

		if (LOAD_HDR(skb, off, &uh))
			return -1;
		*sport = bpf_ntohs(uh.source);
		*dport = bpf_ntohs(uh.dest);
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct { __u8 type, code; __u16 csum; } icmp;

		/* type, code and checksum must be present to call it ICMP */
		if (LOAD_HDR(skb, off, &icmp))
			return -1;
		/* IPFIX convention: type * 256 + code in the destination port,
		 * so echo traffic and neighbour discovery stay separate flows */
		*dport = (icmp.type << 8) | icmp.code;
		return 0;
	}
	default:
		/* other protocols are counted without ports */
		return 0;
	}
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 l3, struct flow4_key *key,
				      __u64 *tcp_flags)
{
	struct iphdr iph;
	__u32 ihl_bytes;

	if (LOAD_HDR(skb, l3, &iph))
		return -1;
	if (iph.version != 4 || iph.ihl < 5)
		return -1;
	ihl_bytes = iph.ihl * 4;
	/* the total length must at least cover the header it claims */
	if (bpf_ntohs(iph.tot_len) < ihl_bytes)
		return -1;
	if (skb->len < l3 + ihl_bytes)
		return -1;

	key->proto = iph.protocol;
	key->saddr = iph.saddr;
	key->daddr = iph.daddr;

	/* only the first fragment carries the L4 header */
	if (bpf_ntohs(iph.frag_off) & 0x1fff)
		return 0;
	return parse_l4(skb, l3 + ihl_bytes, iph.protocol, &key->sport, &key->dport, tcp_flags);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 l3, struct flow6_key *key,
				      __u64 *tcp_flags)
{
	struct ipv6hdr ip6h;
	__u32 off = l3 + IPV6_HLEN;
	__u8 next;
	int i;

	if (LOAD_HDR(skb, l3, &ip6h))
		return -1;
	if (ip6h.version != 6)
		return -1;

	__builtin_memcpy(key->saddr, &ip6h.saddr, 16);
	__builtin_memcpy(key->daddr, &ip6h.daddr, 16);
	next = ip6h.nexthdr;

	/* bounded walk over extension headers to reach the transport header */
	for (i = 0; i < MAX_IPV6_EXT; i++) {
		struct { __u8 next, len; } ext;

		if (next == IPPROTO_FRAGMENT) {
			struct { __u8 b[8]; } fr;
			__u8 *frag = fr.b;

			if (LOAD_HDR(skb, off, &fr))
				return -1;
			key->proto = frag[0];
			/* non-first fragment: no transport header to read */
			if (((frag[2] << 8) | frag[3]) & 0xfff8)
				return 0;
			next = frag[0];
			off += 8;
			continue;
		}
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
		    next != IPPROTO_DSTOPTS)
			break;
		if (LOAD_HDR(skb, off, &ext))
			return -1;
		next = ext.next;
		off += (ext.len + 1) * 8;
	}
	/* a chain longer than MAX_IPV6_EXT is counted under the header we
	 * stopped at, without ports, rather than dropped from the totals */
	key->proto = next;
	return parse_l4(skb, off, next, &key->sport, &key->dport, tcp_flags);
}

/* The common case without copies: an IPv4 packet with a 20-byte header,
 * not a later fragment, carrying TCP or UDP, all in the linear area. Fills
 * key and returns 1; returns 0 for anything else, which the general parser
 * then judges (it reaches the same result for every packet this accepts). */
static __always_inline int fast_ipv4(void *data, void *end, struct flow4_key *key,
				     __u64 *tcp_flags)
{
	struct iphdr *iph = data + ETH_HLEN;
	__u8 *l4 = (void *)(iph + 1);
	__u16 *ports = (void *)l4;

	/* room for a full TCP header; shorter frames take the general path */
	if ((void *)(l4 + sizeof(struct tcphdr)) > end)
		return 0;
	/* version 4, ihl 5: no options */
	if (*(__u8 *)iph != 0x45)
		return 0;
	if (iph->frag_off & bpf_htons(0x1fff) || bpf_ntohs(iph->tot_len) < sizeof(*iph))
		return 0;
	if (iph->protocol == IPPROTO_TCP) {
		/* a data offset below 5 words is malformed: the general path says so */
		if ((l4[12] >> 4) < 5)
			return 0;
		*tcp_flags = l4[13];
	} else if (iph->protocol != IPPROTO_UDP) {
		return 0;
	}
	key->saddr = iph->saddr;
	key->daddr = iph->daddr;
	key->sport = bpf_ntohs(ports[0]);
	key->dport = bpf_ntohs(ports[1]);
	key->proto = iph->protocol;
	return 1;
}

/* The filter of ifindex, or NULL when it counts everything. */
static __always_inline struct flow_filter_if *filter_of(__u32 ifindex)
{
	__u32 key = ifindex / 64;
	__u64 *bits;
	__u32 *gate;

	if (ifindex < ORB8_FILTER_BITMAP_IFS) {
		bits = bpf_map_lookup_elem(&flow_filter_bits, &key);
		if (!bits || !(*bits & (1ULL << (ifindex % 64))))
			return NULL;
	} else {
		key = 0;
		gate = bpf_map_lookup_elem(&flow_filter_gate, &key);
		if (!gate || !*gate)
			return NULL;
	}
	return bpf_map_lookup_elem(&flow_filter_ifs, &ifindex);
}

/* The clauses of f whose port lists the packet's ports satisfy. */
static __always_inline __u32 port_clauses(const struct flow_filter_if *f, __u32 ifindex,
					  __u8 proto, __u16 sport, __u16 dport)
{
	struct flow_filter_port_key pk = { .ifindex = ifindex, .port = sport };
	__u32 mask = f->any_port;
	__u32 n = f->nports;
	__u32 *m;
	int i;

	/* a port list only ever matches TCP and UDP: ICMP keeps type/code in
	 * dport, and a later fragment has no ports (0, never listed) */
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return mask;
	if (n != ORB8_FILTER_IN_MAP) {
		for (i = 0; i < ORB8_FILTER_PORTS; i++) {
			if (i >= n)
				break;
			if (f->ports[i] == sport || f->ports[i] == dport)
				mask |= f->port_clauses[i];
		}
		return mask;
	}
	m = bpf_map_lookup_elem(&flow_filter_ports, &pk);
	if (m)
		mask |= *m;
	if (dport != sport) {
		pk.port = dport;
		m = bpf_map_lookup_elem(&flow_filter_ports, &pk);
		if (m)
			mask |= *m;
	}
	return mask;
}

/* Whether f leaves the IPv4 packet out. The pod's peer is the destination
 * of what the pod sends (tc ingress on its host veth) and the source of
 * what it receives (tc egress). */
static __always_inline int filtered_out4(const struct flow_filter_if *f,
					 const struct flow4_key *key)
{
	struct flow_filter_cidr4_key ck = { .prefixlen = 64, .ifindex = key->ifindex };
	__u32 ports = port_clauses(f, key->ifindex, key->proto, key->sport, key->dport);
	__u32 peer = key->direction == ORB8_DIR_INGRESS ? key->daddr : key->saddr;
	__u32 n = f->ncidr4;
	__u32 peers = 0;
	__u32 *m;
	int i;

	if (ports & f->any_peer)
		return 0;
	if (!ports)
		return 1;
	if (n != ORB8_FILTER_IN_MAP) {
		for (i = 0; i < ORB8_FILTER_CIDR4; i++) {
			if (i >= n)
				break;
			if ((peer & f->cidr4[i].mask) == f->cidr4[i].net)
				peers |= f->cidr4[i].clauses;
		}
		return !(peers & ports);
	}
	ck.addr = peer;
	m = bpf_map_lookup_elem(&flow_filter_cidr4, &ck);
	return !(m && (*m & ports));
}

static __always_inline int filtered_out6(const struct flow_filter_if *f,
					 const struct flow6_key *key)
{
	struct flow_filter_cidr6_key ck = { .prefixlen = 160, .ifindex = key->ifindex };
	__u32 ports = port_clauses(f, key->ifindex, key->proto, key->sport, key->dport);
	__u32 *m;

	if (ports & f->any_peer)
		return 0;
	if (!ports)
		return 1;
	if (key->direction == ORB8_DIR_INGRESS)
		__builtin_memcpy(ck.addr, key->daddr, 16);
	else
		__builtin_memcpy(ck.addr, key->saddr, 16);
	m = bpf_map_lookup_elem(&flow_filter_cidr6, &ck);
	return !(m && (*m & ports));
}

/* Add one packet to its flow in map (flows4 or flows6), inserting the flow
 * when it is new. */
static __always_inline void account(void *map, void *key, struct __sk_buff *skb,
				    __u64 weight, __u64 tcp_flags)
{
	struct flow_value *val;
	__u64 jiffies;
	int err;

	jiffies = bpf_jiffies64();
	val = bpf_map_lookup_elem(map, key);
	if (!val) {
		struct flow_value init = {
			.first_seen_ns = bpf_ktime_get_coarse_ns(),
			.last_jiffies = jiffies,
		};

		init.last_seen_ns = init.first_seen_ns;
		/* BPF_NOEXIST: another CPU may have inserted it meanwhile; then
		 * the lookup below finds its entry and we add to that */
		err = bpf_map_update_elem(map, key, &init, BPF_NOEXIST);
		if (err && err != -17 /* EEXIST */) {
			stat_inc(FLOW_STAT_MAP_FULL);
			return;
		}
		if (!err)
			stat_inc(FLOW_STAT_INSERTED);
		val = bpf_map_lookup_elem(map, key);
		if (!val) {
			stat_inc(FLOW_STAT_MAP_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&val->bytes, (__u64)skb->len * weight);
	__sync_fetch_and_add(&val->packets, weight);
	/* CLOCK_MONOTONIC_COARSE advances once a jiffy: within the same jiffy
	 * the value read last time is still the current one */
	if (val->last_jiffies != jiffies) {
		val->last_jiffies = jiffies;
		val->last_seen_ns = bpf_ktime_get_coarse_ns();
	}
	if (tcp_flags && (val->tcp_flags | tcp_flags) != val->tcp_flags)
		__sync_fetch_and_or(&val->tcp_flags, tcp_flags);
}

static __always_inline int count_skb(struct __sk_buff *skb, __u8 direction)
{
	/* read once, before any branch: the verifier refuses the ctx pointer
	 * arithmetic clang makes when it merges loads from several sites */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 tcp_flags = 0;
	__u64 weight = 1;
	__u32 l3;
	struct flow_filter_if *filter;
	__u16 proto;
	int i;

	if (cfg.sample_rate > 1) {
		if (bpf_get_prandom_u32() % cfg.sample_rate) {
			stat_inc(FLOW_STAT_SAMPLED_OUT);
			return TC_ACT_UNSPEC;
		}
		weight = cfg.sample_rate;
	}

	/* VLAN tags still in the frame (the kernel moves one tag out of band
	 * on receive, but a second one, and tags in test runs, stay in-band):
	 * step over up to two to reach the ethertype of what they carry. */
	proto = skb->protocol;
	l3 = ETH_HLEN;
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		struct { __u16 tci, type; } tag;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (LOAD_HDR(skb, l3, &tag)) {
			stat_inc(FLOW_STAT_MALFORMED);
			return TC_ACT_UNSPEC;
		}
		proto = tag.type;
		l3 += VLAN_HLEN;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct flow4_key key = {};

		if (l3 == ETH_HLEN && fast_ipv4(data, data_end, &key, &tcp_flags)) {
			/* parsed */
		} else if (parse_ipv4(skb, l3, &key, &tcp_flags)) {
			stat_inc(FLOW_STAT_MALFORMED);
			return TC_ACT_UNSPEC;
		}
		key.ifindex = skb->ifindex;
		key.direction = direction;
		/* looked up here, not earlier: nothing stays live across the parser */
		filter = filter_of(key.ifindex);
		if (filter && filtered_out4(filter, &key)) {
			stat_inc(FLOW_STAT_FILTERED);
			return TC_ACT_UNSPEC;
		}
		account(&flows4, &key, skb, weight, tcp_flags);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct flow6_key key = {};

		if (parse_ipv6(skb, l3, &key, &tcp_flags)) {
			stat_inc(FLOW_STAT_MALFORMED);
			return TC_ACT_UNSPEC;
		}
		key.ifindex = skb->ifindex;
		key.direction = direction;
		filter = filter_of(key.ifindex);
		if (filter && filtered_out6(filter, &key)) {
			stat_inc(FLOW_STAT_FILTERED);
			return TC_ACT_UNSPEC;
		}
		account(&flows6, &key, skb, weight, tcp_flags);
	} else {
		stat_inc(FLOW_STAT_NOT_IP);
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int orb8_flows_ingress(struct __sk_buff *skb)
{
	if (!cfg.track_ingress)
		return TC_ACT_UNSPEC;
	return count_skb(skb, ORB8_DIR_INGRESS);
}

SEC("tc")
int orb8_flows_egress(struct __sk_buff *skb)
{
	if (!cfg.track_egress)
		return TC_ACT_UNSPEC;
	return count_skb(skb, ORB8_DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
