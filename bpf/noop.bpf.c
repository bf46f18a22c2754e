// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Empty programs on the same hooks as the real probes. The benchmark
 * attaches them to separate the cost of the hook itself from the cost of
 * what orb8 does inside it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TC_ACT_UNSPEC (-1)

SEC("tc")
int orb8_noop_tc(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

SEC("raw_tracepoint/sys_enter")
int orb8_noop_raw(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int orb8_noop_tp(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
