/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared between the orb8 probes and mirrored by orb8_agent/dataplane/abi.py.
 * Any layout change here must be made there too: user space reads these
 * structs byte for byte out of the maps. */
#ifndef ORB8_COMMON_BPF_H
#define ORB8_COMMON_BPF_H

#define ORB8_DIR_INGRESS 0
#define ORB8_DIR_EGRESS 1

/* TCP flag bits as they appear in byte 13 of the TCP header. */
#define ORB8_TCP_FIN 0x01
#define ORB8_TCP_SYN 0x02
#define ORB8_TCP_RST 0x04
#define ORB8_TCP_PSH 0x08
#define ORB8_TCP_ACK 0x10

/* Two flow maps, one per address family, so an IPv4 packet hashes and
 * compares a 20-byte key instead of a 44-byte one. Both keys carry the
 * interface and the tc direction; the family is the map's. */
struct flow4_key {
	__u32 saddr;    /* network byte order */
	__u32 daddr;
	__u16 sport;    /* host byte order; 0 for ICMP and non-first fragments */
	__u16 dport;    /* for ICMP: type << 8 | code */
	__u32 ifindex;
	__u8 proto;     /* IPPROTO_* */
	__u8 direction; /* ORB8_DIR_* */
	__u16 pad;
};

struct flow6_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;    /* for ICMPv6: type << 8 | code */
	__u32 ifindex;
	__u8 proto;
	__u8 direction;
	__u16 pad;
};

/* The layout version is the first field user space checks in a pinned map
 * it reuses: a map of another layout is replaced, never misread. */
#define ORB8_FLOW_LAYOUT 2

struct flow_value {
	__u64 bytes;
	__u64 packets;
	__u64 first_seen_ns; /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC_COARSE */
	__u64 last_seen_ns;
	/* OR of every flag byte seen; 64-bit because clang's default BPF
	 * CPU (v1) only has 64-bit atomic or */
	__u64 tcp_flags;
	/* jiffies when last_seen_ns was last written: the coarse clock only
	 * moves once a jiffy, so it is read again only when jiffies moved */
	__u64 last_jiffies;
};

/* Only the exceptions are counted: packets that made it into a flow are
 * already counted in the flow itself, and a per-packet counter would cost
 * on the hot path. */
enum flow_stat {
	FLOW_STAT_NOT_IP = 0,    /* ethertype not IPv4/IPv6 */
	FLOW_STAT_MALFORMED,     /* truncated or inconsistent headers */
	FLOW_STAT_SAMPLED_OUT,   /* skipped by sampling */
	FLOW_STAT_MAP_FULL,      /* new flow could not be inserted */
	FLOW_STAT_INSERTED,      /* new flows inserted; with the flows user space
				  * read back this estimates LRU evictions */
	FLOW_STAT_FILTERED,      /* left out by the interface's flow filter */
	FLOW_STAT_MAX,
};

/* Flow filters, per interface (a TraceSession's spec.probes.network.filter).
 * An interface's filter is up to 32 clauses, bit i of each mask standing for
 * clause i (one clause per distinct session filter on that pod). A packet is
 * counted when some clause matches both its ports and its peer address:
 *   ports: any_port, OR the masks of its source and destination port (TCP
 *          and UDP only);
 *   peer:  any_peer, OR the masks of the CIDRs holding the peer (user space
 *          gives each CIDR the OR of every clause whose CIDRs contain it, so
 *          the longest match alone gives the same answer).
 * Up to 16 ports and 8 IPv4 CIDRs sit in the interface's own entry and are
 * scanned there (no further lookup); more go to flow_filter_ports and the
 * flow_filter_cidr4 LPM trie, and IPv6 CIDRs always do (flow_filter_cidr6).
 * An interface without an entry counts everything. */
#define ORB8_FILTER_CLAUSES 32
/* ifindexes below this have their "filtered?" bit in flow_filter_bits */
#define ORB8_FILTER_BITMAP_IFS 65536
#define ORB8_FILTER_PORTS 16
#define ORB8_FILTER_CIDR4 8
/* nports / ncidr4 value: the list is in the map instead */
#define ORB8_FILTER_IN_MAP 0xffff

struct flow_filter_cidr4 {
	__u32 net;      /* network byte order, host bits zero */
	__u32 mask;     /* network byte order */
	__u32 clauses;
};

struct flow_filter_if {
	__u32 any_port; /* clauses without a port list */
	__u32 any_peer; /* clauses without a CIDR list */
	__u16 nports;   /* ports[] used, or ORB8_FILTER_IN_MAP */
	__u16 ncidr4;   /* cidr4[] used, or ORB8_FILTER_IN_MAP */
	__u16 ports[ORB8_FILTER_PORTS];       /* host byte order */
	__u32 port_clauses[ORB8_FILTER_PORTS];
	struct flow_filter_cidr4 cidr4[ORB8_FILTER_CIDR4];
};

struct flow_filter_port_key {
	__u32 ifindex;
	__u16 port;     /* host byte order */
	__u16 pad;
};

/* LPM trie keys: prefixlen counts the 32 ifindex bits plus the CIDR's. */
struct flow_filter_cidr4_key {
	__u32 prefixlen;
	__u32 ifindex;
	__u32 addr;     /* network byte order */
};

struct flow_filter_cidr6_key {
	__u32 prefixlen;
	__u32 ifindex;
	__u8 addr[16];
};

struct flows_config {
	__u32 sample_rate;   /* count 1 in N skbs (scaled back up); 0 or 1 = all */
	__u32 track_ingress; /* 0 turns the ingress program into a pass-through */
	__u32 track_egress;
	__u32 pad;
};

struct syscall_count_key {
	__u64 cgroup_id;
	__u32 nr;
	__u32 pad;
};

struct syscall_event {
	__u64 ts_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u32 pid;   /* thread id */
	__u32 tgid;  /* process id */
	__u32 nr;
	__u32 pad;
	char comm[16];
};

struct alert_window {
	__u64 second;  /* ts_ns / 1e9 of the window this count belongs to */
	__u64 count;
};

enum syscall_stat {
	SYS_STAT_EVENTS = 0,     /* events written to the ring buffer */
	SYS_STAT_RATE_LIMITED,   /* alerts dropped by the per-cgroup cap */
	SYS_STAT_RINGBUF_FULL,   /* bpf_ringbuf_reserve failed */
	SYS_STAT_COUNT_MAP_FULL, /* new (cgroup, nr) pair could not be inserted */
	SYS_STAT_MAX,
};

struct syscalls_config {
	__u32 alerts_per_second; /* per cgroup; 0 disables alerts */
	__u32 max_syscall_nr;    /* size of the alert array actually used */
};

#define ORB8_MAX_SYSCALL_NR 1024

#endif
