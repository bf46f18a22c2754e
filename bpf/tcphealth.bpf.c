// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TCP health per connection: retransmitted segments, resets sent and
 * received, and connect latency (SYN_SENT to ESTABLISHED), aggregated in the
 * kernel per socket 4-tuple and network namespace. No per-event output.
 *
 * Only tracepoints are used: kprobes and fentry are not available on every
 * node orb8 runs on, tracepoints are a stable ABI. Five of them:
 *   tcp:tcp_retransmit_skb      segments (tcp_skb_pcount), as TcpRetransSegs
 *   tcp:tcp_retransmit_synack   a SYN-ACK sent again (also in TcpRetransSegs)
 *   tcp:tcp_send_reset          an RST sent (with or without a socket)
 *   tcp:tcp_receive_reset       an RST that reset a socket
 *   sock:inet_sock_set_state    SYN_SENT and ESTABLISHED timestamps
 * Each has a tp_btf (BTF-typed raw tracepoint, default) and a raw_tp
 * program; the agent autoloads one flavour. One handler body serves both:
 * the hot test (the socket's namespace) is a plain BTF load on tp_btf, the
 * rest reads the kernel structs with BPF_CORE_READ.
 *
 * These fire in softirq or timer context as often as in the task's, so the
 * current task or cgroup says nothing about whose connection it is. The
 * socket's own 4-tuple and network namespace do: user space maps the
 * namespace to a pod and joins the 4-tuple to the flow rows. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcphealth.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP_NR 6
#define EEXIST_NR 17

const volatile struct tcphealth_config cfg = {
	.all_netns = 0,
};

/* network namespaces (inode numbers) whose sockets are counted */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} watched_netns SEC(".maps");

/* Bounded: LRU, so a burst of new connections evicts the oldest idle
 * tuples instead of failing. User space drains it every report. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tcp_health_key);
	__type(value, struct tcp_health_value);
} tcp_health SEC(".maps");

/* socket address -> bpf_ktime_get_ns() at SYN_SENT. The port is not chosen
 * yet when a socket enters SYN_SENT (inet_hash_connect runs after), so the
 * socket pointer is the key; the entry lives for one handshake. LRU: a
 * connect that never finishes cannot pin a slot. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} connect_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPH_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tcp_health_stats SEC(".maps");

enum what { RETRANS, RST_SENT, RST_RECEIVED };

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&tcp_health_stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline bool netns_watched(__u32 netns)
{
	if (cfg.all_netns)
		return true;
	return bpf_map_lookup_elem(&watched_netns, &netns) != NULL;
}

/* On tp_btf the socket is a BTF pointer: a plain load (checked by the
 * verifier, no helper call) is the cheapest test, and every TCP socket on
 * the node pays it on each state change. raw_tp must go through
 * bpf_probe_read_kernel. ``btf`` is a constant in each caller, so only one
 * branch is compiled into each program. */
static __always_inline __u32 sk_netns(const struct sock *sk, bool btf)
{
	if (btf)
		return sk->__sk_common.skc_net.net->ns.inum;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* The 4-tuple from sock_common, which full, request and timewait sockets
 * all start with. Returns false for families other than IPv4/IPv6. */
static __always_inline bool key_from_sock(const struct sock_common *skc,
					  struct tcp_health_key *key)
{
	__u16 family = BPF_CORE_READ(skc, skc_family);
	unsigned char state;

	if (family == AF_INET) {
		key->family = 4;
		BPF_CORE_READ_INTO((__u32 *)key->saddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)key->daddr, skc, skc_daddr);
	} else if (family == AF_INET6) {
		key->family = 6;
		BPF_CORE_READ_INTO(key->saddr, skc, skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(key->daddr, skc, skc_v6_daddr.in6_u.u6_addr8);
	} else {
		return false;
	}
	state = BPF_CORE_READ(skc, skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		key->sport = BPF_CORE_READ(skc, skc_num);
	else
		/* a full socket: skc_num is zeroed when close() unhashes it
		 * before the RST of an abort goes out; inet_sport is what
		 * the packets carry */
		key->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)skc, inet_sport));
	key->dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	return true;
}

/* A reset sent without a connected socket (nothing listens, or a listener
 * answers a bad handshake): name it by the packet it answers, reversed, so
 * the local end comes first like a socket's own tuple. */
static __always_inline bool key_from_skb(const struct sk_buff *skb, struct tcp_health_key *key)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th_off = BPF_CORE_READ(skb, transport_header);
	struct tcphdr th;
	__u8 first;

	/* 0xffff means "not set" for both offsets */
	if (!head || nh == (__u16)~0U || th_off == (__u16)~0U)
		return false;
	if (bpf_probe_read_kernel(&first, 1, head + nh))
		return false;
	if (bpf_probe_read_kernel(&th, sizeof(th), head + th_off))
		return false;
	if ((first >> 4) == 4) {
		struct iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh))
			return false;
		key->family = 4;
		__builtin_memcpy(key->saddr, &iph.daddr, 4);
		__builtin_memcpy(key->daddr, &iph.saddr, 4);
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6h;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return false;
		key->family = 6;
		__builtin_memcpy(key->saddr, &ip6h.daddr, 16);
		__builtin_memcpy(key->daddr, &ip6h.saddr, 16);
	} else {
		return false;
	}
	key->sport = bpf_ntohs(th.dest);
	key->dport = bpf_ntohs(th.source);
	return true;
}

static __always_inline struct tcp_health_value *entry(struct tcp_health_key *key)
{
	struct tcp_health_value *val = bpf_map_lookup_elem(&tcp_health, key);
	struct tcp_health_value zero = {};
	long err;

	if (val)
		return val;
	/* another CPU may insert the same tuple meanwhile: then add to its entry */
	err = bpf_map_update_elem(&tcp_health, key, &zero, BPF_NOEXIST);
	if (err && err != -EEXIST_NR) {
		stat_inc(TCPH_STAT_MAP_FULL);
		return NULL;
	}
	val = bpf_map_lookup_elem(&tcp_health, key);
	if (!val)
		stat_inc(TCPH_STAT_MAP_FULL);
	return val;
}

static __always_inline void count(struct tcp_health_key *key, enum what what, __u64 n)
{
	struct tcp_health_value *val = entry(key);

	if (!val)
		return;
	/* tracepoints of one socket can run on several CPUs at once (timer,
	 * softirq, the task): atomic adds */
	if (what == RETRANS)
		__sync_fetch_and_add(&val->retrans_segs, n);
	else if (what == RST_SENT)
		__sync_fetch_and_add(&val->resets_sent, n);
	else
		__sync_fetch_and_add(&val->resets_received, n);
	stat_inc(TCPH_STAT_EVENTS);
}

static __always_inline void on_sock_event(const struct sock *sk, enum what what, __u64 n,
					  bool btf)
{
	struct tcp_health_key key = {};

	if (!sk)
		return;
	key.netns = sk_netns(sk, btf);
	if (!netns_watched(key.netns))
		return;
	if (!key_from_sock(&sk->__sk_common, &key))
		return;
	count(&key, what, n);
}

static __always_inline void on_retransmit(const struct sock *sk, const struct sk_buff *skb,
					  bool btf)
{
	struct tcp_health_key key = {};
	__u16 segs = 0;

	if (!sk)
		return;
	key.netns = sk_netns(sk, btf);
	if (!netns_watched(key.netns))
		return;
	/* tcp_skb_pcount(): the segments this skb stands for, which is what
	 * the kernel adds to TcpRetransSegs; the cb is tcp_skb_cb on the
	 * retransmit queue */
	if (skb)
		bpf_probe_read_kernel(&segs, sizeof(segs),
				      (void *)skb + bpf_core_field_offset(struct sk_buff, cb) +
					      bpf_core_field_offset(struct tcp_skb_cb, tcp_gso_segs));
	if (!key_from_sock(&sk->__sk_common, &key))
		return;
	count(&key, RETRANS, segs ? segs : 1);
}

static __always_inline void on_retransmit_synack(const struct sock *sk,
						 const struct request_sock *req, bool btf)
{
	struct tcp_health_key key = {};

	if (!req)
		return;
	/* the listener's namespace; the tuple is the request socket's */
	key.netns = sk ? sk_netns(sk, btf) : BPF_CORE_READ(req, __req_common.skc_net.net, ns.inum);
	if (!netns_watched(key.netns))
		return;
	if (!key_from_sock(&req->__req_common, &key))
		return;
	count(&key, RETRANS, 1);
}

static __always_inline void on_send_reset(const struct sock *sk, const struct sk_buff *skb,
					  bool btf)
{
	struct tcp_health_key key = {};
	bool named = false;

	if (sk)
		key.netns = sk_netns(sk, btf);
	else if (skb && btf)
		key.netns = skb->dev->nd_net.net->ns.inum;
	else if (skb)
		key.netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	if (!netns_watched(key.netns))
		return;
	/* a listener's own tuple is a wildcard: the packet names the peer */
	if (sk && BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		named = key_from_sock(&sk->__sk_common, &key);
	if (!named && skb)
		named = key_from_skb(skb, &key);
	if (!named) {
		stat_inc(TCPH_STAT_NO_TUPLE);
		return;
	}
	count(&key, RST_SENT, 1);
}

static __always_inline void on_state(const struct sock *sk, int oldstate, int newstate,
				     bool btf)
{
	struct tcp_health_key key = {};
	struct tcp_health_value *val;
	__u64 sk_addr = (__u64)sk;
	__u64 now, *start, took;

	if (oldstate != TCP_SYN_SENT && newstate != TCP_SYN_SENT)
		return;
	if ((btf ? sk->sk_protocol : BPF_CORE_READ(sk, sk_protocol)) != IPPROTO_TCP_NR)
		return;
	key.netns = sk_netns(sk, btf);
	if (!netns_watched(key.netns))
		return;
	now = bpf_ktime_get_ns();
	if (newstate == TCP_SYN_SENT) {
		if (bpf_map_update_elem(&connect_start, &sk_addr, &now, BPF_ANY))
			stat_inc(TCPH_STAT_START_MAP_FULL);
		return;
	}
	/* leaving SYN_SENT: established, or refused / timed out / aborted */
	start = bpf_map_lookup_elem(&connect_start, &sk_addr);
	if (!start) {
		if (newstate == TCP_ESTABLISHED)
			stat_inc(TCPH_STAT_START_MISSING);
		return;
	}
	took = now - *start;
	bpf_map_delete_elem(&connect_start, &sk_addr);
	if (newstate != TCP_ESTABLISHED)
		return;
	if (!key_from_sock(&sk->__sk_common, &key))
		return;
	val = entry(&key);
	if (!val)
		return;
	__sync_fetch_and_add(&val->connects, 1);
	__sync_fetch_and_add(&val->connect_ns_total, took);
	/* a racing connect on the same tuple is impossible (one socket per
	 * tuple at a time), so a plain max is enough */
	if (took > val->connect_ns_max)
		val->connect_ns_max = took;
	stat_inc(TCPH_STAT_EVENTS);
}

/* --- tp_btf: BTF-typed arguments ------------------------------------------ */

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(orb8_tcp_retransmit_btf, const struct sock *sk, const struct sk_buff *skb)
{
	on_retransmit(sk, skb, true);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(orb8_tcp_retransmit_synack_btf, const struct sock *sk,
	     const struct request_sock *req)
{
	on_retransmit_synack(sk, req, true);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(orb8_tcp_send_reset_btf, const struct sock *sk, const struct sk_buff *skb)
{
	on_send_reset(sk, skb, true);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(orb8_tcp_receive_reset_btf, const struct sock *sk)
{
	on_sock_event(sk, RST_RECEIVED, 1, true);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(orb8_tcp_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	on_state(sk, oldstate, newstate, true);
	return 0;
}

/* --- raw_tp: untyped u64 arguments, same order ---------------------------- */

SEC("raw_tp/tcp_retransmit_skb")
int orb8_tcp_retransmit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	on_retransmit((const struct sock *)ctx->args[0], (const struct sk_buff *)ctx->args[1],
		      false);
	return 0;
}

SEC("raw_tp/tcp_retransmit_synack")
int orb8_tcp_retransmit_synack_raw(struct bpf_raw_tracepoint_args *ctx)
{
	on_retransmit_synack((const struct sock *)ctx->args[0],
			     (const struct request_sock *)ctx->args[1], false);
	return 0;
}

SEC("raw_tp/tcp_send_reset")
int orb8_tcp_send_reset_raw(struct bpf_raw_tracepoint_args *ctx)
{
	on_send_reset((const struct sock *)ctx->args[0], (const struct sk_buff *)ctx->args[1],
		      false);
	return 0;
}

SEC("raw_tp/tcp_receive_reset")
int orb8_tcp_receive_reset_raw(struct bpf_raw_tracepoint_args *ctx)
{
	on_sock_event((const struct sock *)ctx->args[0], RST_RECEIVED, 1, false);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int orb8_tcp_state_raw(struct bpf_raw_tracepoint_args *ctx)
{
	on_state((const struct sock *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2], false);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
