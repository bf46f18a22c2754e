// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Counts syscalls per (cgroup, syscall nr) for watched cgroups only, and
 * emits a ring-buffer event for syscalls on the alert list.
 *
 * The same handler is attached through one of three hook flavours; the agent
 * disables autoload for the two it does not use. The common path for an
 * task, watched or not, is one helper call and one array load: watch_slots,
 * indexed by the cgroup id's low 14 bits, holds the one watched id in that
 * slot. Only a slot that two watched ids share sends the test on to the
 * watched_cgroups hash. On tp_btf the cgroup id is read through BTF, without
 * the helper call. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "orb8_common.bpf.h"

const volatile struct syscalls_config cfg = {
	.alerts_per_second = 100,
	.max_syscall_nr = ORB8_MAX_SYSCALL_NR,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);  /* cgroup v2 id (inode of the cgroup dir) */
	__type(value, __u8);
} watched_cgroups SEC(".maps");

/* Slot (cgroup id mod WATCH_SLOTS): 0 when no watched id maps to it, the id
 * when exactly one does, WATCH_SLOT_SHARED when several do. The verifier turns
 * an array lookup into address arithmetic: no call, no hashing. User space
 * adds an id to watched_cgroups before its slot names it, and empties the
 * slot before it deletes the id. */
#define WATCH_SLOTS 16384
#define WATCH_SLOT_SHARED (~0ULL)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WATCH_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} watch_slots SEC(".maps");

static __always_inline bool watched(__u64 cgroup_id)
{
	__u32 idx = cgroup_id & (WATCH_SLOTS - 1);
	__u64 *slot = bpf_map_lookup_elem(&watch_slots, &idx);

	if (!slot || !*slot)
		return false;
	if (*slot == cgroup_id)
		return true;
	return *slot == WATCH_SLOT_SHARED && bpf_map_lookup_elem(&watched_cgroups, &cgroup_id);
}

/* Array indexed by syscall nr: a bounded index, no hashing on the hot path. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ORB8_MAX_SYSCALL_NR);
	__type(key, __u32);
	__type(value, __u8);
} alert_syscalls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct syscall_count_key);
	__type(value, __u64);
} syscall_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct alert_window);
} alert_windows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} alerts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} syscall_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&syscall_stats, &idx);

	if (v)
		*v += 1;
}

/* Fixed one-second window per cgroup. Two CPUs racing on a window rollover
 * may let a few extra events through; the cap stays bounded either way. */
static __always_inline bool alert_allowed(__u64 cgroup_id, __u64 now)
{
	struct alert_window *w, fresh = {};
	__u64 second = now / 1000000000ULL;

	w = bpf_map_lookup_elem(&alert_windows, &cgroup_id);
	if (!w) {
		fresh.second = second;
		fresh.count = 1;
		bpf_map_update_elem(&alert_windows, &cgroup_id, &fresh, BPF_ANY);
		return cfg.alerts_per_second > 0;
	}
	if (w->second != second) {
		w->second = second;
		w->count = 1;
		return cfg.alerts_per_second > 0;
	}
	return __sync_fetch_and_add(&w->count, 1) < cfg.alerts_per_second;
}

static __always_inline void handle_sys_enter_cg(long id, __u64 cgroup_id)
{
	struct syscall_count_key key = {};
	struct syscall_event *ev;
	__u64 now, pid_tgid, *cnt, one = 1;
	__u32 nr;
	__u8 *alert;

	if (!watched(cgroup_id))
		return;
	/* id is -1 for a syscall that seccomp or ptrace rewrote away */
	if (id < 0 || id >= ORB8_MAX_SYSCALL_NR)
		return;
	nr = (__u32)id;

	key.cgroup_id = cgroup_id;
	key.nr = nr;
	cnt = bpf_map_lookup_elem(&syscall_counts, &key);
	if (cnt) {
		/* per-CPU value: plain add is race free */
		*cnt += 1;
	} else if (bpf_map_update_elem(&syscall_counts, &key, &one, BPF_NOEXIST) &&
		   !bpf_map_lookup_elem(&syscall_counts, &key)) {
		stat_inc(SYS_STAT_COUNT_MAP_FULL);
	}

	if (nr >= cfg.max_syscall_nr)
		return;
	alert = bpf_map_lookup_elem(&alert_syscalls, &nr);
	if (!alert || !*alert)
		return;

	now = bpf_ktime_get_ns();
	if (!alert_allowed(cgroup_id, now)) {
		stat_inc(SYS_STAT_RATE_LIMITED);
		return;
	}
	ev = bpf_ringbuf_reserve(&alerts, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(SYS_STAT_RINGBUF_FULL);
		return;
	}
	pid_tgid = bpf_get_current_pid_tgid();
	ev->ts_ns = now;
	ev->cgroup_id = cgroup_id;
	ev->pid = (__u32)pid_tgid;
	ev->tgid = pid_tgid >> 32;
	ev->nr = nr;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
	stat_inc(SYS_STAT_EVENTS);
}

static __always_inline void handle_sys_enter(long id)
{
	handle_sys_enter_cg(id, bpf_get_current_cgroup_id());
}

/* raw tracepoint: args[0] is struct pt_regs *, args[1] the syscall nr */
SEC("raw_tracepoint/sys_enter")
int orb8_sys_enter_raw(struct bpf_raw_tracepoint_args *ctx)
{
	handle_sys_enter((long)ctx->args[1]);
	return 0;
}

/* BTF-typed raw tracepoint: typed arguments, and the cheapest hook, because
 * it reads the cgroup id through BTF instead of calling a helper */
SEC("tp_btf/sys_enter")
int BPF_PROG(orb8_sys_enter_btf, struct pt_regs *regs, long id)
{
	/* the same id bpf_get_current_cgroup_id() returns (the default
	 * hierarchy's cgroup kernfs id), read through BTF without the call */
	struct task_struct *task = bpf_get_current_task_btf();

	handle_sys_enter_cg(id, task->cgroups->dfl_cgrp->kn->id);
	return 0;
}

/* classic tracepoint: goes through the perf trace buffer marshalling */
SEC("tracepoint/raw_syscalls/sys_enter")
int orb8_sys_enter_tp(struct trace_event_raw_sys_enter *ctx)
{
	handle_sys_enter(BPF_CORE_READ(ctx, id));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
