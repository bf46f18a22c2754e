/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared between dns.bpf.c and mirrored by orb8_agent/dataplane/dns_abi.py.
 * User space reads these structs byte for byte out of the maps: change both
 * sides together. Kept apart from orb8_common.bpf.h so the DNS probe can
 * change without touching the flow probe's header. */
#ifndef ORB8_DNS_BPF_H
#define ORB8_DNS_BPF_H

/* The layout version of the pinned maps (dns_rows, dns_inflight): bumped
 * whenever dns_key, dns_value or dns_inflight_key changes shape. It is part
 * of the names user space pins them under, so a map of another layout is
 * replaced, never misread. */
#define ORB8_DNS_LAYOUT 1

/* Bytes of the question name kept per row, in wire form (length-prefixed
 * labels, lower-cased). Longer names are cut here and flagged. */
#define DNS_NAME_MAX 128

/* key.rcode of the row that counts queries; answers use the header's 4-bit RCODE */
#define DNS_RCODE_QUERY 0xff

#define DNS_FLAG_NAME_TRUNCATED 0x01 /* the name was longer than DNS_NAME_MAX */
#define DNS_FLAG_TCP 0x02            /* seen over TCP (else UDP) */

struct dns_key {
	__u8 client[16]; /* the querier; IPv4 uses the first 4 bytes */
	__u8 server[16];
	__u32 ifindex;
	__u16 qtype;
	__u8 rcode;      /* 0..15, or DNS_RCODE_QUERY */
	__u8 family;     /* 4 or 6 */
	__u8 name_len;   /* bytes used in name (<= DNS_NAME_MAX) */
	__u8 flags;      /* DNS_FLAG_* */
	__u8 pad[6];     /* name starts 8-byte aligned: it is written a word at a time */
	__u8 name[DNS_NAME_MAX];
};

struct dns_value {
	__u64 count;          /* queries (rcode row QUERY) or answers */
	__u64 matched;        /* answers matched to a query in flight */
	__u64 latency_sum_ns; /* over matched answers */
	__u64 latency_max_ns;
	__u64 last_seen_ns;
};

/* A query waiting for its answer: the answer comes back to the client's
 * address and port with the same DNS id, through the same interface. */
struct dns_inflight_key {
	__u8 client[16];
	__u32 ifindex;
	__u16 client_port; /* host byte order */
	__u16 id;
	__u8 family;
	__u8 proto;        /* IPPROTO_UDP or IPPROTO_TCP */
	__u16 pad;
};

/* Every DNS-port packet lands in exactly one of QUERIES .. TCP_SKIPPED;
 * the ones after it are sub-counts of those. */
enum dns_stat {
	DNS_STAT_QUERIES = 0,     /* queries counted in a row */
	DNS_STAT_ANSWERS,         /* answers counted in a row */
	DNS_STAT_MALFORMED,       /* short header, bad label, name runs off the packet */
	DNS_STAT_QDCOUNT,         /* qdcount != 1: no single name to file it under */
	DNS_STAT_NOT_QUERY,       /* opcode other than QUERY, or QR/port mismatch */
	DNS_STAT_MAP_FULL,        /* the row could not be inserted */
	DNS_STAT_TCP_SKIPPED,     /* TCP segment that is not exactly one whole message */
	DNS_STAT_COMPRESSED,      /* of MALFORMED: compression pointer in the question */
	DNS_STAT_NAME_TRUNCATED,  /* of QUERIES/ANSWERS: name cut at DNS_NAME_MAX */
	DNS_STAT_UNMATCHED,       /* of ANSWERS: no query in flight (evicted or not seen) */
	DNS_STAT_INSERTED,        /* new rows inserted (with rows read: LRU evictions) */
	DNS_STAT_MAX,
};

struct dns_config {
	__u16 port;  /* the server port; 53 */
	__u16 tcp;   /* 0 skips TCP entirely */
	__u32 pad;
};

#endif
