// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Empty tp_btf programs on the TCP health probe's five tracepoints: the floor
 * (the cost of a program being there at all) that bench/tcphealth.py
 * measures the probe against, side by side under the same workload. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("tp_btf/tcp_retransmit_skb")
int floor_retransmit(void *ctx) { return 0; }

SEC("tp_btf/tcp_retransmit_synack")
int floor_retransmit_synack(void *ctx) { return 0; }

SEC("tp_btf/tcp_send_reset")
int floor_send_reset(void *ctx) { return 0; }

SEC("tp_btf/tcp_receive_reset")
int floor_receive_reset(void *ctx) { return 0; }

SEC("tp_btf/inet_sock_set_state")
int floor_state(void *ctx) { return 0; }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
