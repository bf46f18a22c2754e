// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Reference programs for `make bench`, never shipped.
 *
 * ref_count: the simplest useful flow counter, the reference `make bench` measures the
 * flow probe's in-kernel cost against: parse Ethernet, IPv4 and TCP/UDP
 * ports, one hash lookup on a 16-byte IPv4 5-tuple, an atomic add. No IPv6,
 * no direction, no clock, no eviction, no statistics. It adds bytes and
 * packets, as the flow probe does.
 *
 * empty_raw_tp / empty_btf: empty programs on raw_syscalls:sys_enter, the
 * floor of the syscall probe's two cheap hooks. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_UNSPEC (-1)
#define ETH_P_IP 0x0800

struct key4 {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct val4 {
	__u64 bytes;
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key4);
	__type(value, struct val4);
} ref_flows SEC(".maps");

SEC("tc")
int ref_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct key4 k = {};
	struct val4 *v, init = {};
	__u16 *ports;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > end)
		return TC_ACT_UNSPEC;
	k.saddr = ip->saddr;
	k.daddr = ip->daddr;
	k.sport = ports[0];
	k.dport = ports[1];
	k.proto = ip->protocol;
	v = bpf_map_lookup_elem(&ref_flows, &k);
	if (!v) {
		bpf_map_update_elem(&ref_flows, &k, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&ref_flows, &k);
		if (!v)
			return TC_ACT_UNSPEC;
	}
	__sync_fetch_and_add(&v->bytes, skb->len);
	__sync_fetch_and_add(&v->packets, 1);
	return TC_ACT_UNSPEC;
}

SEC("raw_tracepoint/sys_enter")
int empty_raw_tp(void *ctx)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int empty_btf(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
