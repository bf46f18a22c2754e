/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The TCP health probe's map layouts, mirrored byte for byte by
 * orb8_agent/dataplane/tcphealth.py (TCP_HEALTH_KEY, TCP_HEALTH_VALUE).
 * Kept apart from orb8_common.bpf.h so the flow probe can change on its own. */
#ifndef ORB8_TCPHEALTH_H
#define ORB8_TCPHEALTH_H

/* One socket's 4-tuple from its own side: s* is the local end, d* the
 * remote one, exactly as the socket holds them (sock_common). */
struct tcp_health_key {
	__u8 saddr[16]; /* IPv4 uses the first 4 bytes, the rest stays zero */
	__u8 daddr[16];
	__u32 netns;    /* inode of the socket's network namespace (/proc/PID/ns/net) */
	__u16 sport;    /* host byte order */
	__u16 dport;    /* host byte order */
	__u8 family;    /* 4 or 6 */
	__u8 pad[3];
};

struct tcp_health_value {
	__u64 retrans_segs;     /* segments retransmitted (what TcpRetransSegs counts) */
	__u64 resets_sent;      /* RSTs sent (what TcpOutRsts counts) */
	__u64 resets_received;  /* RSTs that reset the socket (tcp_reset()) */
	__u64 connects;         /* active opens that reached ESTABLISHED */
	__u64 connect_ns_total; /* SYN_SENT -> ESTABLISHED, summed over connects */
	__u64 connect_ns_max;
};

enum tcp_health_stat {
	TCPH_STAT_EVENTS = 0,       /* events counted into the health map */
	TCPH_STAT_MAP_FULL,         /* a new 4-tuple could not be inserted */
	TCPH_STAT_START_MAP_FULL,   /* a connect start could not be remembered */
	TCPH_STAT_START_MISSING,    /* ESTABLISHED without a remembered SYN_SENT */
	TCPH_STAT_NO_TUPLE,         /* a reset with neither a socket nor a packet to name it */
	TCPH_STAT_MAX,
};

struct tcphealth_config {
	__u32 all_netns; /* 1: count every network namespace (orb8 trace --local) */
	__u32 pad;
};

#endif
