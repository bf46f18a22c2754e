// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc classifier that counts DNS queries and answers inside the kernel.
 *
 * A companion of flows.bpf.c on the same interfaces (its own filter, its own
 * maps). It only observes: every path returns TC_ACT_UNSPEC. Per DNS message
 * it reads the 12-byte header and the question, then adds to one row of an
 * LRU hash keyed by (interface, client, server, name, qtype, rcode); no event
 * ever goes to user space. A query is remembered in a bounded LRU "in
 * flight" map under (interface, client ip, client port, DNS id) so that its
 * answer yields a latency. Everything that is not a well-formed single
 * question only bumps a per-CPU counter.
 *
 * Non-DNS packets cost the Ethernet/IP/L4 header reads and one compare. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "orb8_dns.bpf.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define MAX_VLAN_TAGS 2
#define VLAN_HLEN 4
#define IPV6_HLEN 40
#define DNS_HLEN 12
/* Bounds pointer math for the verifier; no header we read starts later. */
#define MAX_HDR_OFF 4096
/* A name is at most 255 bytes on the wire (RFC 1035 3.1), then qtype and
 * qclass: the whole question fits in this many bytes. */
#define QNAME_WIRE_MAX 255
#define QUESTION_MAX (QNAME_WIRE_MAX + 4)
#define SCRATCH_SIZE 264
/* 255 bytes hold at most 127 one-byte labels and the root: 128 steps. */
#define MAX_LABELS 128

const volatile struct dns_config cfg = {
	.port = 53,
	.tcp = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dns_key);
	__type(value, struct dns_value);
} dns_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct dns_inflight_key);
	__type(value, __u64);
} dns_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DNS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dns_stats SEC(".maps");

/* What the header walk found, for orb8_dns_message(). */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 dns_off;  /* where the DNS message starts */
	__u32 dns_len;  /* its length as the transport says */
	__u8 family;
	__u8 proto;
};

#define WALK_FOUND 1
#define WALK_BAD 2
#define WALK_COMPRESSED 3

struct walk {
	__u64 pos; /* offset of the next length byte in the scratch copy */
	__u64 n;   /* bytes copied */
	__u64 result;
};

/* Per-CPU working memory (a tc program runs to completion on one CPU). */
struct scratch {
	__u8 buf[SCRATCH_SIZE]; /* the question, copied in one helper call */
	struct pkt p; /* the addresses and ports, handed to orb8_dns_message() */
	/* the row key: 176 bytes would not fit the stack next to the rest */
	struct dns_key key __attribute__((aligned(8)));
	/* the label walk's state, kept here rather than on the stack: the
	 * verifier does not track values in a map, so every step of the
	 * bpf_loop looks the same to it and the check converges at once
	 * (on the stack, each step's narrower range made a new state: 128 of
	 * them, seconds of verification) */
	struct walk walk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} dns_scratch SEC(".maps");

/* Same fast/slow path as flows.bpf.c: direct access when the bytes are in
 * the linear area, bpf_skb_load_bytes() when they are paged. */
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
	__u64 *v = bpf_map_lookup_elem(&dns_stats, &idx);

	/* per-CPU slot: no other CPU writes it */
	if (v)
		*v += 1;
}

/* 1: a DNS-port packet whose message bounds are in p; 0: not ours (no
 * counter moves); negative: a DNS-port packet we cannot take apart, already
 * counted. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u32 ip_end,
				    struct pkt *p)
{
	if (p->proto == IPPROTO_UDP) {
		struct udphdr uh;
		__u32 ulen;

		if (LOAD_HDR(skb, off, &uh))
			return 0;
		p->sport = bpf_ntohs(uh.source);
		p->dport = bpf_ntohs(uh.dest);
		if (p->sport != cfg.port && p->dport != cfg.port)
			return 0;
		ulen = bpf_ntohs(uh.len);
		/* the UDP length must cover its header and stay inside the
		 * IP datagram (frames may carry Ethernet padding after it) */
		if (ulen < sizeof(uh) || off + ulen > ip_end || off + ulen > skb->len) {
			stat_inc(DNS_STAT_MALFORMED);
			return -1;
		}
		p->dns_off = off + sizeof(uh);
		p->dns_len = ulen - sizeof(uh);
		return 1;
	}
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr th;
		__u16 msglen;
		__u32 payload, poff;

		if (!cfg.tcp || LOAD_HDR(skb, off, &th))
			return 0;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		if (p->sport != cfg.port && p->dport != cfg.port)
			return 0;
		if (th.doff < 5)
			return 0;
		poff = off + th.doff * 4;
		if (poff >= ip_end)
			return 0; /* no payload (handshake, ACK, FIN): not a message */
		payload = ip_end - poff;
		if (ip_end > skb->len || payload < 2 || LOAD_HDR(skb, poff, &msglen)) {
			stat_inc(DNS_STAT_TCP_SKIPPED);
			return -1;
		}
		/* Only a segment that holds exactly one whole length-prefixed
		 * message is parsed: a stream cut elsewhere would need
		 * reassembly, which a classifier cannot do. */
		if ((__u32)bpf_ntohs(msglen) + 2 != payload) {
			stat_inc(DNS_STAT_TCP_SKIPPED);
			return -1;
		}
		p->dns_off = poff + 2;
		p->dns_len = payload - 2;
		return 1;
	}
	return 0;
}

static __always_inline int parse_ip(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto = skb->protocol;
	__u32 l3 = ETH_HLEN;
	int i;

	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		struct { __u16 tci, type; } tag;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (LOAD_HDR(skb, l3, &tag))
			return 0;
		proto = tag.type;
		l3 += VLAN_HLEN;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr iph;
		__u32 ihl;

		if (LOAD_HDR(skb, l3, &iph))
			return 0;
		if (iph.version != 4 || iph.ihl < 5)
			return 0;
		if (iph.protocol != IPPROTO_UDP && iph.protocol != IPPROTO_TCP)
			return 0;
		/* a later fragment has no transport header to read */
		if (bpf_ntohs(iph.frag_off) & 0x1fff)
			return 0;
		ihl = iph.ihl * 4;
		if (bpf_ntohs(iph.tot_len) < ihl)
			return 0;
		p->family = 4;
		p->proto = iph.protocol;
		__builtin_memcpy(p->saddr, &iph.saddr, 4);
		__builtin_memcpy(p->daddr, &iph.daddr, 4);
		return parse_l4(skb, l3 + ihl, l3 + bpf_ntohs(iph.tot_len), p);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6h;

		if (LOAD_HDR(skb, l3, &ip6h))
			return 0;
		/* DNS behind IPv6 extension headers is not looked at */
		if (ip6h.version != 6 ||
		    (ip6h.nexthdr != IPPROTO_UDP && ip6h.nexthdr != IPPROTO_TCP))
			return 0;
		p->family = 6;
		p->proto = ip6h.nexthdr;
		__builtin_memcpy(p->saddr, &ip6h.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6h.daddr, 16);
		return parse_l4(skb, l3 + IPV6_HLEN,
				l3 + IPV6_HLEN + bpf_ntohs(ip6h.payload_len), p);
	}
	return 0;
}



/* One label per call. In a question every label is a plain one: a
 * compression pointer (0b11) has nothing before it to point to, and the
 * 0b01/0b10 types are obsolete or reserved, so a length byte above 63 is
 * never valid here. */
static long walk_label(__u64 index, void *unused)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&dns_scratch, &zero);
	__u64 pos;
	__u8 len;

	if (!s)
		return 1;
	pos = s->walk.pos;
	if (pos >= s->walk.n || pos >= SCRATCH_SIZE) {
		s->walk.result = WALK_BAD; /* ran off the message (or off 255 bytes) */
		return 1;
	}
	len = s->buf[pos];
	if (len == 0) {
		s->walk.result = WALK_FOUND;
		return 1;
	}
	if ((len & 0xc0) == 0xc0) {
		s->walk.result = WALK_COMPRESSED;
		return 1;
	}
	if (len > 63) {
		s->walk.result = WALK_BAD;
		return 1;
	}
	s->walk.pos = pos + len + 1;
	return 0;
}

/* Lower-case the name in place, a word at a time, without a branch (names
 * are case-insensitive and resolvers randomise case: one name is one row).
 * Length bytes (<= 63) and the zeroes after the name are never letters. */
static __always_inline void lower_name(__u8 *name)
{
	int k;

#pragma clang loop unroll(full)
	for (k = 0; k < DNS_NAME_MAX / 8; k++) {
		__u64 x = *(__u64 *)(name + 8 * k);
		__u64 low7 = x & 0x7f7f7f7f7f7f7f7fULL;
		/* per byte: bit 7 set where 'A' <= b <= 'Z' (ASCII only) */
		__u64 upper = (low7 + 0x3f3f3f3f3f3f3f3fULL) & ~(low7 + 0x2525252525252525ULL) &
			      ~x & 0x8080808080808080ULL;

		*(__u64 *)(name + 8 * k) = x | (upper >> 2);
	}
}

static __always_inline void add_row(struct dns_key *key, __u64 latency, int matched, __u64 now)
{
	struct dns_value *val = bpf_map_lookup_elem(&dns_rows, key);

	if (!val) {
		struct dns_value init = {};
		int err = bpf_map_update_elem(&dns_rows, key, &init, BPF_NOEXIST);

		if (err && err != -17 /* EEXIST: another CPU inserted it */) {
			stat_inc(DNS_STAT_MAP_FULL);
			return;
		}
		if (!err)
			stat_inc(DNS_STAT_INSERTED);
		val = bpf_map_lookup_elem(&dns_rows, key);
		if (!val) {
			stat_inc(DNS_STAT_MAP_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&val->count, 1);
	if (matched) {
		__sync_fetch_and_add(&val->matched, 1);
		__sync_fetch_and_add(&val->latency_sum_ns, latency);
		/* racy max: two CPUs may both write, the larger one may lose by
		 * one answer; acceptable for a diagnostic maximum */
		if (latency > val->latency_max_ns)
			val->latency_max_ns = latency;
	}
	val->last_seen_ns = now;
	if (key->rcode == DNS_RCODE_QUERY)
		stat_inc(DNS_STAT_QUERIES);
	else
		stat_inc(DNS_STAT_ANSWERS);
	if (key->flags & DNS_FLAG_NAME_TRUNCATED)
		stat_inc(DNS_STAT_NAME_TRUNCATED);
}

/* Everything after the transport header, as a global function: the
 * verifier checks it once, not once per way the headers before it were
 * read (direct access or helper, VLAN tags or not). It finds the addresses
 * and ports in the per-CPU scratch, where orb8_dns() left them. */
__noinline int orb8_dns_message(struct __sk_buff *skb)
{
	struct dns_key *key;
	struct dns_inflight_key fk = {};
	struct { __u16 id, flags, qd, an, ns, ar; } hdr;
	struct scratch *s;
	__u32 zero = 0;
	/* 64-bit so the bounds checked are the registers used to index */
	__u64 n, pos = 0, qlen;
	__u16 flags;
	__u64 now, latency = 0;
	int qr, matched = 0;

	struct pkt *pp;

	if (!skb)
		return TC_ACT_UNSPEC;
	s = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!s)
		return TC_ACT_UNSPEC;
	pp = &s->p;
	key = &s->key;
	__builtin_memset(key, 0, sizeof(*key));

	if (pp->dns_len < DNS_HLEN || bpf_skb_load_bytes(skb, pp->dns_off, &hdr, sizeof(hdr))) {
		stat_inc(DNS_STAT_MALFORMED);
		return TC_ACT_UNSPEC;
	}
	flags = bpf_ntohs(hdr.flags);
	qr = flags >> 15;
	/* standard queries only; a query goes to the DNS port, an answer
	 * comes from it */
	if (((flags >> 11) & 0xf) != 0 || (!qr && pp->dport != cfg.port) ||
	    (qr && pp->sport != cfg.port)) {
		stat_inc(DNS_STAT_NOT_QUERY);
		return TC_ACT_UNSPEC;
	}
	if (bpf_ntohs(hdr.qd) != 1) {
		stat_inc(DNS_STAT_QDCOUNT);
		return TC_ACT_UNSPEC;
	}

	/* the root name and qtype/qclass need 5 bytes at least */
	n = pp->dns_len;
	if (n < DNS_HLEN + 5) {
		stat_inc(DNS_STAT_MALFORMED);
		return TC_ACT_UNSPEC;
	}
	n -= DNS_HLEN;
	if (n > QUESTION_MAX)
		n = QUESTION_MAX;
	barrier_var(n);
	/* restated after the barrier for the verifier's sake */
	if (n < 5 || n > QUESTION_MAX ||
	    bpf_skb_load_bytes(skb, pp->dns_off + DNS_HLEN, s->buf, n)) {
		stat_inc(DNS_STAT_MALFORMED);
		return TC_ACT_UNSPEC;
	}

	/* Walk the labels to the root (bpf_loop: the verifier checks the
	 * step once instead of once per possible label). */
	s->walk.pos = 0;
	s->walk.n = n;
	s->walk.result = WALK_BAD; /* 128 labels without the root */
	bpf_loop(MAX_LABELS, walk_label, NULL, 0);
	pos = s->walk.pos;
	if (s->walk.result == WALK_COMPRESSED)
		stat_inc(DNS_STAT_COMPRESSED);
	/* found: pos is the root byte; the name must fit 255 bytes with it,
	 * and qtype + qclass must follow inside the message */
	if (s->walk.result != WALK_FOUND || pos + 1 > QNAME_WIRE_MAX || pos + 5 > n) {
		stat_inc(DNS_STAT_MALFORMED);
		return TC_ACT_UNSPEC;
	}
	barrier_var(pos);
	if (pos > QNAME_WIRE_MAX)
		return TC_ACT_UNSPEC; /* restated for the verifier */
	key->qtype = (s->buf[pos + 1] << 8) | s->buf[pos + 2];

	qlen = pos;
	if (qlen > DNS_NAME_MAX) {
		qlen = DNS_NAME_MAX;
		key->flags |= DNS_FLAG_NAME_TRUNCATED;
	}
	key->name_len = qlen;
	barrier_var(qlen);
	if (qlen > DNS_NAME_MAX)
		return TC_ACT_UNSPEC; /* restated for the verifier */
	/* the root name has no bytes to copy; the rest of key->name stays zero */
	if (qlen && bpf_skb_load_bytes(skb, pp->dns_off + DNS_HLEN, key->name, qlen))
		return TC_ACT_UNSPEC;
	lower_name(key->name);

	key->ifindex = skb->ifindex;
	key->family = pp->family;
	if (pp->proto == IPPROTO_TCP)
		key->flags |= DNS_FLAG_TCP;

	fk.ifindex = skb->ifindex;
	fk.family = pp->family;
	fk.proto = pp->proto;
	fk.id = hdr.id;
	now = bpf_ktime_get_ns();

	if (!qr) {
		__builtin_memcpy(key->client, pp->saddr, 16);
		__builtin_memcpy(key->server, pp->daddr, 16);
		key->rcode = DNS_RCODE_QUERY;
		__builtin_memcpy(fk.client, pp->saddr, 16);
		fk.client_port = pp->sport;
		/* a retry with the same id restarts the clock: the latency is
		 * that of the attempt that was answered */
		bpf_map_update_elem(&dns_inflight, &fk, &now, BPF_ANY);
	} else {
		__u64 *sent;

		__builtin_memcpy(key->client, pp->daddr, 16);
		__builtin_memcpy(key->server, pp->saddr, 16);
		key->rcode = flags & 0xf;
		__builtin_memcpy(fk.client, pp->daddr, 16);
		fk.client_port = pp->dport;
		sent = bpf_map_lookup_elem(&dns_inflight, &fk);
		if (sent) {
			if (now > *sent)
				latency = now - *sent;
			matched = 1;
			bpf_map_delete_elem(&dns_inflight, &fk);
		} else {
			stat_inc(DNS_STAT_UNMATCHED);
		}
	}
	add_row(key, latency, matched, now);
	return TC_ACT_UNSPEC;
}

static __always_inline int count_dns(struct __sk_buff *skb)
{
	struct scratch *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!s)
		return TC_ACT_UNSPEC;
	__builtin_memset(&s->p, 0, sizeof(s->p));
	if (parse_ip(skb, &s->p) <= 0)
		return TC_ACT_UNSPEC; /* not DNS: the common case ends here */
	orb8_dns_message(skb);
	return TC_ACT_UNSPEC;
}

/* One program for both hooks: a query and its answer are told apart by the
 * QR bit and the ports, not by the direction they cross the interface. */
SEC("tc")
int orb8_dns(struct __sk_buff *skb)
{
	return count_dns(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
