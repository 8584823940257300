#!/usr/bin/env python3
"""Writes BENCHMARKS.md from one run of bench/epollcr_bench (Google Benchmark JSON). Standard library only.

Run by scripts/bench. Every number in the output is read from that run's JSON (or, for the machine, from lscpu,
uname, /proc and the build directory at report time); a figure that is missing from the run is reported as
missing, never filled in. The plots (SVG, drawn by scripts/plot with gnuplot) are drawn from the same figures. The
section on real programs reads a second JSON, the run of bench/real_programs_bench (--real-json; the Debian package
versions it names are read with dpkg-query at report time).

To extend the report: a numbered section is a function of the run returning (title, Markdown lines), listed in
SECTIONS; a goal is a function listed in GOALS; a plot is a function returning a scripts/plot spec, listed in PLOTS.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

AGGREGATE = "median"
N_VALUES = (10, 100, 1000, 10000, 100000)
KERNEL_MAX_N = 10000  # the kernel side stops at 10000 eventfds (20,000 fds per process here)
FLAT_ACROSS_N = (10, 1000, 100000)  # goal (a)
KERNEL_N_VALUES = (10, 1000, 10000)  # goal (b), at the N of issue 1 that the kernel side reaches
# The libevent benchmark shape (bench/libevent_bench.cc): N pipes; the kernel's need 2 fds each, so it stops at 9000.
LIBEVENT_N = (100, 1000, 9000, 100000)
LIBEVENT_KERNEL_MAX_N = 9000
# Both clocks Google Benchmark records: the benchmark thread's CPU time (user + system) and the wall clock.
CLOCKS = (("cpu_time", "CPU"), ("real_time", "wall"))
NS_PER = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
# Checkpoint save and load (issue 3): goal (f), LoadWorld per entry <= the kernel's epoll_ctl ADD per entry / 3.
CHECKPOINT_FORMATS = ("boost-text", "boost-xml", "boost-binary")
CHECKPOINT_N = (1000, 100000, 1000000)
# The kernel's ADD at the same N (N registrations in one epoll instance), and at 10,000 (once the baseline of every N,
# still shown for comparison).
KERNEL_ADD_OLD_N = 10000


def kernel_add_name(n):
    return f"BM_CheckpointKernelAdd/entries:{n}"


LOAD_GOAL = 1 / 3
# The protobuf image (issue 4): goal (g) read+decode+validate+restore per entry <= the kernel's ADD per entry / 5;
# (h) entry records <= 12 bytes per entry with fds, ids and data below 2^14 (the 1,000-entry world); (i) peak heap
# during save or load <= 3 x the world's heap.
RESTORE_GOAL = 1 / 5
ENTRY_BYTES_GOAL = 12
SMALL_VALUES_N = 1000  # the world whose fds, object ids and data are all below 2^14
PEAK_GOAL = 3
# Saves that do not stop the world for long (issue 17, item 4): (r) image::SaveImage (encode only) <= 100 ns per entry
# and (s) SaveWorld in boost-binary <= 150 ns per entry, at every N; (t) the time a save holds the consistent cut's
# locks (the counter locks_held_ns, wall clock: SavePause) <= half of the save's wall time, for both.
# (u) Boost text and xml archives <= 10 ns per byte buffered in pipes and socket pairs, to save and to load
# (bench/buffered_bench.cc, BM_Buffered{Save,Load}/<format>; proto and boost-binary are shown beside them).
BUFFERED_FORMATS = ("boost-text", "boost-xml", "boost-binary", "proto")
BUFFERED_GOAL_FORMATS = ("boost-text", "boost-xml")
BUFFERED_GOAL_NS = 10
IMAGE_SAVE_GOAL_NS = 100
BINARY_SAVE_GOAL_NS = 150
LOCKS_HELD_GOAL = 0.5
# The restorer (issue 5): (j) in-memory restore per registration <= the kernel's ADD / 5 (restore::RestoreBytes);
# (k) restoring 10,000 host-fd registrations <= 1.5 x re-adding the same fds to the kernel's epoll.
# (j) also: in-memory restore <= 150 ns per registration at every N (issue 17).
# (k) is judged on the restore that checks every fd and rebuilds the kernel epoll, with the library's own choice of
# path for its two batches of system calls (lib/src/syscall_batch.h), and on the restore a live hand-off's successor
# makes (no system call per fd); the other paths are reported beside them.
HOST_RESTORE = "BM_RestoreHostFds/auto/registrations:10000"
HOST_REARM = "BM_KernelReAddHostFds/registrations:10000"
HOST_RESTORE_GOAL = 1.5
IN_MEMORY_RESTORE_MAX_NS = 150
# The restores of 10,000 host fds, each a row of *Restore*: (label, benchmark).
HOST_RESTORE_PATHS = (
    ("checked, rebuilt (the library's choice of path)", HOST_RESTORE),
    ("checked, rebuilt, every batch through io_uring", "BM_RestoreHostFds/ring/registrations:10000"),
    ("checked, rebuilt, every call alone", "BM_RestoreHostFds/single/registrations:10000"),
    ("checked, kernel epoll adopted (an exec hand-off)", "BM_RestoreHostFdsAdopted/inherited/registrations:10000"),
    ("handed over (a live hand-off's successor)", "BM_RestoreHostFdsAdopted/handed_over/registrations:10000"),
)
HOST_RESTORE_SINGLE = HOST_RESTORE_PATHS[2][1]
HOST_RESTORE_HANDED_OVER = HOST_RESTORE_PATHS[4][1]
# The system calls each registration of a host-fd restore makes when every call goes alone: an fstat and an
# epoll_ctl ADD (checked, rebuilt); and of the kernel's re-add: one epoll_ctl ADD.
HOST_RESTORE_SINGLE_CALLS = 2
# The two kinds of machine of issue 17, VMs of the same kind: one where a system call (getppid) costs 1.3 us and a
# fault of a fresh 4 KiB page 16 us, and one where they cost 193 ns and 2.2 us. Every restore goal is projected onto
# the kind this run's machine is not (other_machine_costs): a run on the cheap kind (a system call under
# CHEAP_SYSCALL_NS) is projected onto the dear one, and the other way round.
MACHINE_KINDS = {"dear": (1300, 16000), "cheap": (193, 2200)}
CHEAP_SYSCALL_NS = 500
RESTORE_STAGES = ("read", "validate", "resolve", "build", "after_load")
# Host fds (bench/host_roundtrip_bench.cc, bench/echo_server_bench.cc): (l) a one-byte round trip over a socket pair
# through an EventPoll over a HostFile <= 1.2 x through the kernel's epoll, level- and edge-triggered; (m) the echo
# server of cli/demo on an EventPoll >= 0.9 x the same server on a kernel epoll, in requests per second.
ROUND_TRIP_TRIGGERS = (("lt", "level-triggered"), ("et", "edge-triggered (EPOLLET)"))
ROUND_TRIP_GOAL = 1.2
ECHO_CLIENTS = (100, 1000)
ECHO_GOAL = 0.9
# The echo benchmark's requests per second on each clock: wall, requests per second of the window; CPU, requests per
# second of the server process's CPU time (the load generator's thread CPU, Google Benchmark's cpu_time there, says
# nothing about the server's poll).
ECHO_RATE = {"cpu_time": "rps_server_cpu", "real_time": "rps"}


# Real programs (bench/real_programs_bench.cc, run by scripts/bench into a second JSON, --real-json): (n) each server
# under `epollcr run` >= 0.9 x its requests per second on the kernel's epoll, at 50 and 500 connections. Wall: the load
# tool's requests per second; CPU: requests per second of the server's CPU time (as goal (m)).
# Each program by its name in the benchmarks' names, and the Debian packages of its server and load tool.
REAL_PROGRAMS = (("redis", "redis-server redis-tools"), ("nginx", "nginx-light wrk"),
                 ("memcached", "memcached libmemcached-tools"))
REAL_CONNECTIONS = (50, 500)
REAL_GOAL = 0.9
REAL_RATE = {"cpu_time": "rps_server_cpu", "real_time": "requests_per_second"}


def real_name(program, engine, connections):
    return f"BM_RealProgram/{program}/{engine}/connections:{connections}"


def round_trip_name(engine, trigger):
    return f"BM_HostRoundTrip/{engine}/{trigger}"


def echo_name(engine, clients):
    return f"BM_EchoServer/{engine}/clients:{clients}"


class Run:
    """The aggregates of one benchmark run, by run name."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        self.context = data.get("context", {})
        self.aggregates = {}  # run_name -> aggregate_name -> entry
        self.singles = {}  # run_name -> entry, for benchmarks run once (no aggregates)
        self.errors = {}  # run_name -> message
        self.error_runs = {}  # run_name -> ([the message of each repetition that failed], repetitions asked for)
        for entry in data.get("benchmarks", []):
            name = entry.get("run_name", entry["name"])
            if entry.get("error_occurred"):
                self.errors[name] = entry.get("error_message", "error")
                self.error_runs.setdefault(name, ([], entry.get("repetitions", 1)))[0].append(self.errors[name])
                continue
            if entry.get("run_type") == "aggregate":
                self.aggregates.setdefault(name, {})[entry["aggregate_name"]] = entry
            elif entry.get("repetitions", 1) == 1:
                self.singles[name] = entry
        self.repetitions = max((e.get("repetitions", 1) for a in self.aggregates.values() for e in a.values()),
                               default=0)

    def value(self, name, field, aggregate=AGGREGATE):
        entry = self.aggregates.get(self.resolve(name), {}).get(aggregate)
        if entry is None or field not in entry:
            return None
        return float(entry[field])

    def per_unit(self, name, clock):
        """(ns per unit of work, cv) on `clock` ("cpu_time" or "real_time"): the median time per iteration divided by
        the benchmark's units_per_iteration counter, and the coefficient of variation across repetitions."""
        name = self.resolve(name)
        entry = self.aggregates.get(name, {}).get(AGGREGATE)
        cv = self.value(name, clock, "cv")
        if entry is None:  # a benchmark run once: its only run, and no cv
            entry, cv = self.singles.get(name), None
        if entry is None or clock not in entry or "units_per_iteration" not in entry:
            return None, None
        ns = float(entry[clock]) * NS_PER[entry.get("time_unit", "ns")] / float(entry["units_per_iteration"])
        return ns, cv

    def missing(self, name):
        return self.errors.get(self.resolve(name), "not in this run")

    def repetitions_of(self, name):
        entry = self.aggregates.get(self.resolve(name), {}).get(AGGREGATE)
        return None if entry is None else entry.get("repetitions")

    def resolve(self, prefix):
        """The run name that is `prefix` or `prefix` followed by Google Benchmark's suffixes ("/iterations:1/...")."""
        for name in list(self.aggregates) + list(self.singles) + list(self.errors):
            if name == prefix or name.startswith(prefix + "/"):
                return name
        return prefix

    def single(self, prefix, field):
        entry = self.singles.get(self.resolve(prefix))
        return None if entry is None or field not in entry else float(entry[field])


def command_output(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(build_dir, run):
    lscpu = {}
    for line in command_output(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        lscpu[key.strip()] = value.strip()
    # The compiler meson configured the build with, as its log names it.
    compiler = "unknown"
    marker = "C++ compiler for the host machine:"
    try:
        with open(os.path.join(build_dir, "meson-logs", "meson-log.txt"), encoding="utf-8") as f:
            for line in f:
                if line.startswith(marker):
                    compiler = line[len(marker):].strip()
    except OSError:
        pass
    # The code measured: the commit scripts/bench built, and whether the measured folders differed from it.
    commit = command_output(["git", "rev-parse", "--short", "HEAD"]).strip() or "unknown"
    measured = ["lib", "restore", "proto", "bench", "cli/demo"]
    if command_output(["git", "status", "--porcelain", "--"] + measured).strip():
        commit += " with uncommitted changes in " + ", ".join(d + "/" for d in measured)
    rows = [
        ("epollcr commit", commit),
        ("CPU", lscpu.get("Model name", "unknown")),
        ("CPUs", lscpu.get("CPU(s)", "unknown")),
        ("Virtual machine", "yes (the CPU reports the hypervisor flag)" if "hypervisor" in lscpu.get("Flags", "").split()
         else "not reported"),
        ("Kernel", platform.release()),
        ("Compiler (build-bench)", compiler),
        ("Date of the run", run.context.get("date", "unknown")),
        ("Load average at the start", ", ".join(f"{x:.2f}" for x in run.context.get("load_avg", [])) or "unknown"),
        ("libbenchmark's own build type (the Debian package; epollcr is built release)",
         run.context.get("library_build_type", "unknown")),
    ]
    return rows


def fmt_ns(value, cv=None):
    if value is None:
        return "—"
    text = f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    if cv is not None:
        text += f" (cv {cv * 100:.1f}%)"
    return text


def ratio(user, kernel):
    return None if user is None or kernel is None or kernel == 0 else user / kernel


def fmt_ratio(value):
    if value is None:
        return "—"
    return f"{value:.3f} (1/{1 / value:.1f})" if value > 0 else "0"


def verdict(ok):
    if ok is None:
        return "NOT MEASURED"
    return "MET" if ok else "NOT MET"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def side_by_side(run, label, user_name, kernel_name):
    """A table row: per clock, userspace ns, kernel ns, ratio."""
    row = [label]
    for clock, _ in CLOCKS:
        user = run.per_unit(user_name, clock)
        kernel = run.per_unit(kernel_name, clock) if kernel_name else (None, None)
        row += [fmt_ns(*user), fmt_ns(*kernel) if kernel_name else "not run (fd limit)",
                fmt_ratio(ratio(user[0], kernel[0]))]
    return row


def side_by_side_header(first, unit):
    header = [first]
    for _, clock in CLOCKS:
        header += [f"userspace {unit}, {clock}", f"kernel {unit}, {clock}", f"ratio, {clock}"]
    return header


def goals_on(run, clock):
    """[(label, threshold, measured, ok or None)] computed from one clock."""
    goals = []

    def user_nh(n):
        return run.per_unit(f"BM_NotifyHarvest_Userspace/n:{n}", clock)[0]

    def kernel_nh(n):
        return run.per_unit(f"BM_NotifyHarvest_Kernel/n:{n}", clock)[0]

    flat = {n: user_nh(n) for n in FLAT_ACROSS_N}
    label = "(a) notify+ReadEvents cost does not grow with N (N = 10, 1000, 100000)"
    if None in flat.values():
        goals.append((label, "max/min ≤ 1.25", "missing: " + "; ".join(
            run.missing(f"BM_NotifyHarvest_Userspace/n:{n}") for n, v in flat.items() if v is None), None))
    else:
        spread = max(flat.values()) / min(flat.values())
        goals.append((label, "max/min ≤ 1.25",
                      f"{max(flat.values()):.1f} / {min(flat.values()):.1f} = {spread:.3f}", spread <= 1.25))

    ratios = {n: ratio(user_nh(n), kernel_nh(n)) for n in KERNEL_N_VALUES}
    absent = [n for n, r in ratios.items() if r is None]
    measured = "; ".join(f"N={n:,}: {r:.3f}" for n, r in ratios.items() if r is not None) or "—"
    if absent:
        measured += " (missing: " + ", ".join(f"N={n:,}" for n in absent) + ")"
    goals.append(("(b) notify+ReadEvents ≤ 1/10 of the kernel's write+epoll_wait+read at the same N",
                  "≤ 0.100 at N = " + ", ".join(f"{n:,}" for n in KERNEL_N_VALUES), measured,
                  None if absent else all(r <= 0.1 for r in ratios.values())))

    r = ratio(run.per_unit("BM_ReadEvents1000_Userspace", clock)[0],
              run.per_unit("BM_ReadEvents1000_Kernel", clock)[0])
    goals.append(("(c) ReadEvents with 1000 LT ready ≤ 1/3 of the kernel's per event", "≤ 0.333", fmt_ratio(r),
                  None if r is None else r <= 1 / 3))

    r = ratio(run.per_unit("BM_AddRemove_Userspace", clock)[0], run.per_unit("BM_AddRemove_Kernel", clock)[0])
    goals.append(("(d) AddEntry+RemoveEntry ≤ 1/5 of the kernel's ADD+DEL", "≤ 0.200", fmt_ratio(r),
                  None if r is None else r <= 1 / 5))
    return goals


def checkpoint_goals_on(run, clock):
    """Goal (f), one per format: [(label, threshold, measured, ok or None)] computed from one clock."""
    goals = []
    for fmt in CHECKPOINT_FORMATS:
        ratios = {n: load_ratio(run, fmt, n, clock) for n in CHECKPOINT_N}
        absent = [n for n, r in ratios.items() if r is None]
        measured = "; ".join(f"N={n:,}: {r:.3f}" for n, r in ratios.items() if r is not None) or "—"
        if absent:
            measured += " (missing: " + ", ".join(f"N={n:,}" for n in absent) + ")"
        goals.append((f"(f) LoadWorld ({fmt}) per entry ≤ 1/3 of the kernel's epoll_ctl ADD per entry",
                      "≤ 0.333 at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N), measured,
                      None if absent else all(r <= LOAD_GOAL for r in ratios.values())))
    return goals


def checkpoint_name(kind, fmt, n):
    return f"BM_Checkpoint{kind}/{fmt}/entries:{n}"


def load_ratio(run, fmt, n, clock):
    return ratio(run.per_unit(checkpoint_name("Load", fmt, n), clock)[0], run.per_unit(kernel_add_name(n), clock)[0])


def locks_held(run, name):
    """(ns per entry the save held the cut's locks, that as a share of the save's wall time per entry), either None."""
    held = run.value(name, "locks_held_ns")
    if held is None:
        held = run.single(name, "locks_held_ns")
    wall = run.per_unit(name, "real_time")[0]
    return held, ratio(held, wall)


def fmt_share(value):
    return "—" if value is None else f"{value * 100:.0f} %"


def gathered(cases, text):
    """Several cases of one goal: [(label, value or None)] -> (the values present, the measured cell), the cell listing
    each value through `text` and then the cases that are missing."""
    values = [v for _, v in cases if v is not None]
    measured = "; ".join(f"{label}: {text(v)}" for label, v in cases if v is not None) or "—"
    absent = [label for label, v in cases if v is None]
    if absent:
        measured += " (missing: " + ", ".join(absent) + ")"
    return (None if absent else values), measured


def save_goals_on(run, clock):
    """Goals (r) and (s) on one clock: [(label, threshold, measured, ok or None)]."""
    goals = []
    for label, name_of, limit in (
            ("(r) image::SaveImage (encode only) per entry", lambda n: image_name("Encode", n), IMAGE_SAVE_GOAL_NS),
            ("(s) SaveWorld (boost-binary) per entry", lambda n: checkpoint_name("Save", "boost-binary", n),
             BINARY_SAVE_GOAL_NS)):
        values, measured = gathered([(f"N={n:,}", run.per_unit(name_of(n), clock)[0]) for n in CHECKPOINT_N],
                                    lambda v: f"{v:,.0f} ns")
        goals.append((f"{label} ≤ {limit} ns", f"≤ {limit} ns at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N),
                      measured, None if values is None else all(v <= limit for v in values)))
    return goals


def locks_held_goals(run):
    """Goal (t), judged on the wall clock only (the cut's pause is wall time): [(label, threshold, measured, ok)]."""
    values, measured = gathered(
        [(f"{what} N={n:,}", locks_held(run, name_of(n))[1])
         for what, name_of in (("image", lambda n: image_name("Encode", n)),
                               ("boost-binary", lambda n: checkpoint_name("Save", "boost-binary", n)))
         for n in CHECKPOINT_N], fmt_share)
    return [("(t) a save holds the cut's locks ≤ 50 % of its wall time (image::SaveImage, SaveWorld boost-binary)",
             "≤ 50 % at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N), measured,
             None if values is None else all(v <= LOCKS_HELD_GOAL for v in values))]


def buffered_name(kind, fmt):
    return f"BM_Buffered{kind}/{fmt}"


def buffered_goals_on(run, clock):
    """Goal (u) on one clock: [(label, threshold, measured, ok or None)]."""
    values, measured = gathered([(f"{fmt} {kind.lower()}", run.per_unit(buffered_name(kind, fmt), clock)[0])
                                 for fmt in BUFFERED_GOAL_FORMATS for kind in ("Save", "Load")],
                                lambda v: f"{v:.1f} ns")
    return [(f"(u) Boost text and xml archives ≤ {BUFFERED_GOAL_NS} ns per buffered byte, to save and to load",
             f"≤ {BUFFERED_GOAL_NS} ns", measured,
             None if values is None else all(v <= BUFFERED_GOAL_NS for v in values))]


def buffered_lines(run):
    """The buffered-bytes table of *Checkpoint save and load*: Markdown lines."""
    total = None
    for fmt in BUFFERED_FORMATS:
        total = total or run.value(buffered_name("Save", fmt), "buffered_bytes")
    say = []
    say.append("### Bytes buffered in pipes and socket pairs\n")
    say.append("A world whose weight is its buffered bytes (`bench/buffered_bench.cc`): 32 pipes and 8 AF_UNIX socket "
               "pairs of the engine, each filled until a write fails with EAGAIN (both directions of a socket pair), "
               "every read end and socket in one EventPoll" +
               ("" if total is None else f"; {total:,.0f} bytes buffered in all") + ". **Save**: `SaveWorld` "
               "(`image::SaveImage` for proto), freeing the result timed too; **load**: `LoadWorld` "
               "(`image::LoadImage`) into an empty world, tearing it down outside the timed region. Nanoseconds per "
               "buffered byte:\n")
    header = ["format"]
    for _, clock in CLOCKS:
        header += [f"save, {clock}", f"load, {clock}"]
    rows = []
    for fmt in BUFFERED_FORMATS:
        row = [fmt]
        for clock, _ in CLOCKS:
            row += [fmt_ns(*run.per_unit(buffered_name("Save", fmt), clock)),
                    fmt_ns(*run.per_unit(buffered_name("Load", fmt), clock))]
        rows.append(row)
    say.append(table(header, rows) + "\n")
    return say


def loaded_world_share(run):
    """" (what the loaded world keeps, as a range of multiples of the world's heap)", from the measured net change."""
    shares = []
    for fmt in CHECKPOINT_FORMATS:
        for n in CHECKPOINT_N:
            name = checkpoint_name("Memory", fmt, n)
            kept, heap = run.single(name, "load_net_heap_bytes_mallinfo"), run.single(name, "world_heap_bytes")
            if kept is not None and heap:
                shares.append(kept / heap)
    if not shares:
        return ""
    return f" (what a load keeps, by `mallinfo2()`: {min(shares):.2f}–{max(shares):.2f} × the world's heap in this run)"


def image_name(kind, n):
    return f"BM_Image{kind}/entries:{n}"


def image_memory_name(data, n):
    return f"BM_ImageMemory/{data}/entries:{n}"


def restore_ratio(run, n, clock):
    return ratio(run.per_unit(image_name("Restore", n), clock)[0], run.per_unit(kernel_add_name(n), clock)[0])


def machine_costs(run):
    """(one system call, one fault of a fresh 4 KiB page) on this machine, ns, CPU clock: the *Machine* rows."""
    return run.per_unit("BM_NullSyscall_Kernel", "cpu_time")[0], run.per_unit("BM_PageFault/huge:0/idle_s:0",
                                                                                 "cpu_time")[0]


def machine_note(run):
    """The machine's costs, cited beside a verdict that depends on them."""
    syscall, fault = machine_costs(run)
    return f"[this machine: system call {fmt_ns(syscall)} ns, 4 KiB fault {fmt_ns(fault)} ns]"


def faults_per_entry(run, name):
    value = run.value(name, "faults_per_entry")
    return run.single(name, "faults_per_entry") if value is None else value


def other_kind(run):
    """The kind of machine this run is not: "dear" or "cheap" (MACHINE_KINDS)."""
    syscall = machine_costs(run)[0]
    return "dear" if syscall is not None and syscall < CHEAP_SYSCALL_NS else "cheap"


def other_machine_costs(run):
    """(one system call, one 4 KiB fault) on the other kind of machine, ns."""
    return MACHINE_KINDS[other_kind(run)]


def projected(run, name, clock, syscalls):
    """ns per unit of `name` on the other kind of machine (other_machine_costs), from this run: less `syscalls` system calls per
    unit and the benchmark's faults per unit (faults_per_entry) at this machine's cost, plus the same counts at that
    machine's. The work inside the kernel and in userspace is taken to cost what it costs here. None if a figure is
    missing."""
    ns = run.per_unit(name, clock)[0]
    syscall, fault = machine_costs(run)
    faults = faults_per_entry(run, name)
    if None in (ns, syscall, fault, faults):
        return None
    other_syscall, other_fault = other_machine_costs(run)
    return ns - syscalls * (syscall - other_syscall) - faults * (fault - other_fault)


def kernel_projected(run, name, clock):
    """The kernel's ADD (one system call per registration) on the other machine: the same kernel work."""
    ns = run.per_unit(name, clock)[0]
    syscall = machine_costs(run)[0]
    return None if ns is None or syscall is None else ns - (syscall - other_machine_costs(run)[0])


def other_machine(run):
    syscall, fault = other_machine_costs(run)
    return f"{syscall:,} ns a system call, {fault / 1000:.1f} µs a 4 KiB fault"


def image_goals_on(run, clock):
    """Goal (g) on one clock: [(label, threshold, measured, ok or None)]."""
    ratios = {n: restore_ratio(run, n, clock) for n in CHECKPOINT_N}
    absent = [n for n, r in ratios.items() if r is None]
    measured = "; ".join(f"N={n:,}: {r:.3f}" for n, r in ratios.items() if r is not None) or "—"
    if absent:
        measured += " (missing: " + ", ".join(f"N={n:,}" for n in absent) + ")"
    other = {n: ratio(projected(run, image_name("Restore", n), clock, 0),
                      kernel_projected(run, kernel_add_name(n), clock)) for n in CHECKPOINT_N}
    measured += f" {machine_note(run)}; projected at {other_machine(run)}: " + projection_text(other, RESTORE_GOAL)
    return [("(g) image read+decode+validate+restore per entry ≤ 1/5 of the kernel's epoll_ctl ADD per entry",
             "≤ 0.200 at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N), measured,
             None if absent else all(r <= RESTORE_GOAL for r in ratios.values()))]


def projection_text(by_n, limit, unit=""):
    """"N=1,000: 0.123; ... (MET)" for projected figures by N against an upper limit."""
    if None in by_n.values():
        return "— (a figure is missing)"
    fmt = (lambda v: f"{v:.1f} ns") if unit == "ns" else (lambda v: f"{v:.3f}")
    text = "; ".join(f"N={n:,}: {fmt(v)}" for n, v in by_n.items())
    return text + f" ({'MET' if all(v <= limit for v in by_n.values()) else 'NOT MET'})"


def image_memory_goals(run):
    """Goals (h) and (i), which have no clock: [(label, threshold, measured, ok or None)]."""
    records = run.single(image_memory_name("fd", SMALL_VALUES_N), "entry_record_bytes")
    per_entry = None if records is None else records / SMALL_VALUES_N
    goals = [(f"(h) image entry records ≤ {ENTRY_BYTES_GOAL} bytes per entry (fds, ids, data < 2^14: N = "
              f"{SMALL_VALUES_N:,})", f"≤ {ENTRY_BYTES_GOAL}",
              "—" if per_entry is None else f"{per_entry:.2f} bytes",
              None if per_entry is None else per_entry <= ENTRY_BYTES_GOAL)]
    worst, absent = None, []
    for n in CHECKPOINT_N:
        name = image_memory_name("fd", n)
        heap = run.single(name, "world_heap_bytes")
        for call in ("save", "load"):
            peak = run.single(name, f"{call}_peak_heap_bytes")
            if peak is None or not heap:
                absent.append(f"{call} N={n:,}")
            elif worst is None or peak / heap > worst[0]:
                worst = (peak / heap, call, n)
    measured = "—" if worst is None else f"highest: {worst[0]:.2f} ({worst[1]}, N={worst[2]:,})"
    if absent:
        measured += " (missing: " + ", ".join(absent) + ")"
    goals.append(("(i) image peak heap during save or load ≤ 3 × the world's heap",
                  "≤ 3.00 at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N), measured,
                  None if absent or worst is None else worst[0] <= PEAK_GOAL))
    return goals


def image_section(run):
    """The protobuf image, beside the same kernel baseline: (title, Markdown lines)."""
    out = []
    say = out.append
    say("The same worlds as in *Checkpoint save and load*. **encode+write**: `image::WriteImage(world, path)`: the consistent cut, the "
        "`epollcr.v1.Image`, its encoding, the framing (CRC32C) and the atomic, durable write (temporary file, fsync, "
        "rename, fsync of the directory). **encode only**: `image::SaveImage(world)`, the same into memory; "
        "**locks held** is how long it held the consistent cut (`SavePause`, wall clock): the capture of the files "
        "and polls, while the fd table's records and the encoding follow with the world free. "
        "**read+decode+validate**: `ReadImageFile` (read, framing, CRC32C), `Decode`, `Validate`. "
        "**read+decode+validate+restore**: `image::ReadImage(path, &empty_world)`, which ends with after_load exactly as "
        "a Boost load does; tearing the world down is outside the timed region. The image file is in the page cache "
        "(it was just written), as it is for a restore right after a checkpoint. Runs as in *Checkpoint save and load*.\n")
    header = ["N"]
    for _, clock in CLOCKS:
        header += [f"encode+write, {clock}", f"encode only, {clock}", f"read+decode+validate, {clock}",
                   f"read+decode+validate+restore, {clock}"]
    header += ["encode only: locks held, wall", "encode only: locks held / save, wall"]
    for _, clock in CLOCKS:
        header += [f"restore / kernel ADD, {clock}", f"verdict, {clock}"]
    rows = []
    for n in CHECKPOINT_N:
        row = [f"{n:,}"]
        for clock, _ in CLOCKS:
            for kind in ("Save", "Encode", "Read", "Restore"):
                row.append(fmt_ns(*run.per_unit(image_name(kind, n), clock)))
        held, share = locks_held(run, image_name("Encode", n))
        row += [fmt_ns(held), fmt_share(share)]
        for clock, _ in CLOCKS:
            r = restore_ratio(run, n, clock)
            row += [fmt_ratio(r), verdict(None if r is None else r <= RESTORE_GOAL)]
        rows.append(row)
    say("Nanoseconds per entry:\n")
    say(table(header, rows) + "\n")
    say("**Size and memory**, one save and one restore per N, for two kinds of entry data: `fd` (the data is the "
        "entry's fd, below 2^14 at N = 1,000) and `pointer` (a pointer-like 64-bit value, 0x7f3a5c000000 + 48 k, as "
        "a program that stores object addresses in `epoll_data` has). **entry records** are the polls' entry columns "
        "(`EventPollState`), what each entry costs on its own and the figure comparable to CRIU's per-entry records "
        "(about 10–31 bytes); **image** is the whole file, whose file and fd records the world needs with or without "
        "a poll (here every entry has its own fd). Peaks as in *Checkpoint save and load*, with the buffers epollcr maps itself "
        "(`epollcr/memory.h`) counted at their full size.\n")
    rows = []
    for data in ("fd", "pointer"):
        for n in CHECKPOINT_N:
            name = image_memory_name(data, n)
            heap = run.single(name, "world_heap_bytes")
            image_bytes = run.single(name, "image_bytes")
            records = run.single(name, "entry_record_bytes")
            row = [data, f"{n:,}", "—" if records is None else f"{records / n:.2f}",
                   "—" if image_bytes is None else f"{image_bytes / n:.2f}",
                   "—" if heap is None else f"{heap / n:.1f}"]
            for call in ("save", "load"):
                peak = run.single(name, f"{call}_peak_heap_bytes")
                row.append("—" if peak is None or not heap else f"{peak / heap:.2f}")
            rows.append(row)
    say(table(["data", "N", "entry record bytes/entry", "image bytes/entry", "world heap bytes/entry",
               "peak during save (× world heap)", "peak during restore (× world heap)"], rows) + "\n")
    return "Checkpoint image (protobuf)", out


def in_memory_restore_name(n):
    return f"BM_RestoreInMemory/entries:{n}"


def restore_goals_on(run, clock):
    """Goals (j) and (k) on one clock: [(label, threshold, measured, ok or None)]."""
    ratios = {n: ratio(run.per_unit(in_memory_restore_name(n), clock)[0], run.per_unit(kernel_add_name(n), clock)[0])
              for n in CHECKPOINT_N}
    absent = [n for n, r in ratios.items() if r is None]
    measured = "; ".join(f"N={n:,}: {r:.3f}" for n, r in ratios.items() if r is not None) or "—"
    if absent:
        measured += " (missing: " + ", ".join(f"N={n:,}" for n in absent) + ")"
    other = {n: ratio(projected(run, in_memory_restore_name(n), clock, 0),
                      kernel_projected(run, kernel_add_name(n), clock)) for n in CHECKPOINT_N}
    measured += f" {machine_note(run)}; projected at {other_machine(run)}: " + projection_text(other, RESTORE_GOAL)
    goals = [("(j) in-memory restore (restore::RestoreBytes) per registration ≤ 1/5 of the kernel's epoll_ctl ADD",
              "≤ 0.200 at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N), measured,
              None if absent else all(r <= RESTORE_GOAL for r in ratios.values()))]

    per = {n: run.per_unit(in_memory_restore_name(n), clock)[0] for n in CHECKPOINT_N}
    absent = [n for n, v in per.items() if v is None]
    measured = "; ".join(f"N={n:,}: {v:.1f} ns" for n, v in per.items() if v is not None) or "—"
    if absent:
        measured += " (missing: " + ", ".join(f"N={n:,}" for n in absent) + ")"
    other = {n: projected(run, in_memory_restore_name(n), clock, 0) for n in CHECKPOINT_N}
    measured += (f" {machine_note(run)}; projected at {other_machine(run)}: "
                 + projection_text(other, IN_MEMORY_RESTORE_MAX_NS, "ns"))
    goals.append((f"(j) in-memory restore per registration ≤ {IN_MEMORY_RESTORE_MAX_NS} ns",
                  f"≤ {IN_MEMORY_RESTORE_MAX_NS} ns at N = " + ", ".join(f"{n:,}" for n in CHECKPOINT_N), measured,
                  None if absent else all(v <= IN_MEMORY_RESTORE_MAX_NS for v in per.values())))

    host = ratio(run.per_unit(HOST_RESTORE, clock)[0], run.per_unit(HOST_REARM, clock)[0])
    # The library picks the cheaper path where it runs. Every call alone is the path a machine with cheap system calls
    # takes, so its projection bounds the choice's there; where they are dear the ring, with no system call of its own
    # per fd, is projected beside it and the cheaper counts.
    other = ratio(projected(run, HOST_RESTORE_SINGLE, clock, HOST_RESTORE_SINGLE_CALLS),
                  kernel_projected(run, HOST_REARM, clock))
    path = "every call alone"
    if other_kind(run) == "dear":
        ring = ratio(projected(run, HOST_RESTORE_PATHS[1][1], clock, 0), kernel_projected(run, HOST_REARM, clock))
        if other is None or (ring is not None and ring < other):
            other, path = ring, "the ring"
    measured = (f"{fmt_ratio(host)}, paths: {host_paths_text(run, HOST_RESTORE)} {machine_note(run)}; projected at "
                f"{other_machine(run)}, {path}: "
                + ("—" if other is None else f"{other:.3f} ({'MET' if other <= HOST_RESTORE_GOAL else 'NOT MET'})"))
    goals.append(("(k) host-fd restore per registration ≤ 1.5 × re-adding the same fds to the kernel's epoll "
                  "(10,000 sockets, every fd checked, the kernel epoll rebuilt)", f"≤ {HOST_RESTORE_GOAL:.2f}",
                  measured, None if host is None else host <= HOST_RESTORE_GOAL))
    handed = ratio(run.per_unit(HOST_RESTORE_HANDED_OVER, clock)[0], run.per_unit(HOST_REARM, clock)[0])
    other = ratio(projected(run, HOST_RESTORE_HANDED_OVER, clock, 0), kernel_projected(run, HOST_REARM, clock))
    measured = (f"{fmt_ratio(handed)} {machine_note(run)}; projected at {other_machine(run)}: "
                + ("—" if other is None else f"{other:.3f} ({'MET' if other <= HOST_RESTORE_GOAL else 'NOT MET'})"))
    goals.append(("(k) the same, as a live hand-off restores them (fds named by the predecessor, its kernel epoll "
                  "taken over: no system call per fd)", f"≤ {HOST_RESTORE_GOAL:.2f}", measured,
                  None if handed is None else handed <= HOST_RESTORE_GOAL))
    return goals


def host_paths_text(run, name):
    """Which path the restore's two batches took ("statx ring, epoll_ctl alone"), from its counters."""
    def path(counter):
        share = run.value(name, counter)
        if share is None:
            share = run.single(name, counter)
        if share is None:
            return "?"
        return "ring" if share >= 0.999 else "alone" if share <= 0.001 else f"ring in {share * 100:.0f} %"
    return f"statx {path('stat_ring')}, epoll_ctl ADD {path('add_ring')}"


def restore_section(run):
    """The restorer (restore/restorer.h) against the kernel's re-add: (title, Markdown lines)."""
    out = []
    say = out.append
    say("`restore::RestoreBytes` (docs/restore.md) from a framed image in memory into an empty world; tearing the "
        "world down is outside the timed region. **host fds**: 10,000 real sockets (5,000 socket pairs, both ends), "
        "each a host file registered once in one EventPoll (level-triggered, edge-triggered and one-shot by k % 3). "
        "**checked, rebuilt** (goal (k)): through an `InheritedFdResolver`, each fd's identity checked (`statx`), "
        "wrapped in a host file, the entries built and registered afresh in the poll's new kernel epoll (kernel "
        "entries: the kernel's `epoll_ctl(ADD)` re-checks readiness; docs/restore.md), the two batches of system "
        "calls on the path the library chose (*System-call paths*), and, beside it, on each path forced. **kernel "
        "epoll adopted**: the poll's kernel epoll given up by the world that saved the image and taken over as it is "
        "(no `epoll_ctl`): after an exec (`AcceptInherited`, each fd checked, the registrations read back from "
        "/proc/self/fdinfo once), or from a live hand-off's predecessor (`AcceptHandedOver`, "
        "`InheritedFdResolver::Trusted`: no system call per fd). The CPU clock counts the restoring thread only, "
        "not the kernel's io-wq workers that run `statx` requests on a ring: judge the ring paths by the wall "
        "clock. Beside them, `epoll_create1` and `epoll_ctl(ADD)` of the same 10,000 fds, what CRIU does at restore. "
        "**in-memory**: the eventfd worlds of *Checkpoint save and load*, against the kernel's ADD of the same N "
        "registrations (`BM_CheckpointKernelAdd/entries:N`, *Checkpoint save and load*). Every restore here runs "
        "again and again in one process, so it finds the large buffers an earlier one freed, which epollcr keeps "
        "for the next of the same size (lib/src/big_buffer.h; docs/restore.md, \"Speed\"): only a process's first "
        "restore of a size faults them in. **faults**: minor page faults of the restoring thread per registration "
        "(a fault that maps a huge page counts once).\n")
    header = ["restore", "registrations"]
    for _, clock in CLOCKS:
        header += [f"ns per registration, {clock}", f"kernel re-add, {clock}", f"ratio, {clock}"]
    header += ["faults per registration", "path of the batches"]
    rows = []
    cases = [(f"host fds, {label}", 10000, name, HOST_REARM) for label, name in HOST_RESTORE_PATHS]
    cases += [("in-memory", n, in_memory_restore_name(n), kernel_add_name(n)) for n in CHECKPOINT_N]
    for label, n, name, kernel in cases:
        row = [label, f"{n:,}"]
        for clock, _ in CLOCKS:
            user, cv = run.per_unit(name, clock)
            k, kcv = run.per_unit(kernel, clock)
            row += [fmt_ns(user, cv), fmt_ns(k, kcv), fmt_ratio(ratio(user, k))]
        faults = faults_per_entry(run, name)
        row.append("—" if faults is None else f"{faults:.3f}")
        row.append(host_paths_text(run, name) if name.startswith("BM_RestoreHostFds/") else "—")
        rows.append(row)
    say(table(header, rows) + "\n")
    say("**Stages** (restore::Report, steady clock, ns per registration, median of the repetitions): read = "
        "unframe + decode; validate (twice when the image is rewritten); resolve (resolvers, and the re-key or "
        "prune rewrite); build; after_load (entries on their lists, waiters registered, kernel entries registered "
        "in their polls' kernel epolls, or their kernel epoll adopted).\n")
    rows = []
    for label, n, name, _ in cases:
        row = [label, f"{n:,}"]
        for stage in RESTORE_STAGES:
            v = run.value(name, f"{stage}_ns")
            if v is None:
                v = run.single(name, f"{stage}_ns")
            row.append("—" if v is None else f"{v:,.0f}")
        rows.append(row)
    say(table(["restore", "registrations"] + list(RESTORE_STAGES), rows) + "\n")
    syscall, fault = machine_costs(run)
    fstat = run.per_unit("BM_StatPath/single", "cpu_time")[0]
    fstat_extra = None if fstat is None or syscall is None else fstat - syscall
    if other_kind(run) == "cheap":
        ring_note = ("The ring paths are not projected: their cost is the kernel's work, and where a call is cheap the "
                     "library measures the ring against calls alone and keeps the cheaper, so the every-call-alone "
                     "figure bounds its choice there. ")
        lean = (f"an `fstat` of a socket: {fmt_ns(fstat_extra)} ns here, *System-call paths*; issue 17 measured a "
                "whole `fstat` at about 0.3 µs there")
    else:
        ring_note = ("Where system calls are dear the library's probe keeps the ring, which makes no system call of "
                     "its own per fd: its figure is projected with none, its work inside the kernel as here. ")
        lean = f"an `fstat` of a socket: {fmt_ns(fstat_extra)} ns here, *System-call paths*"
    say(f"**On the other kind of machine** (issue 17: a VM of the same kind with {other_machine(run)}; this machine: "
        f"{fmt_ns(syscall)} ns and {fmt_ns(fault)} ns, *Machine*). Projected from this run, not measured: each "
        "figure (CPU clock) less its system calls and page faults at this machine's cost, plus the same counts at "
        "that machine's; the work inside the kernel and in userspace is taken to cost what it costs here. A restore "
        "in memory makes no system call per registration; one that runs every call alone makes "
        f"{HOST_RESTORE_SINGLE_CALLS} (`fstat`, `epoll_ctl(ADD)`); the kernel's re-add makes 1. " + ring_note +
        "A call heavier than getppid keeps all of its cost above getppid's (" + lean + "), and a fault that maps a "
        "huge page is counted as one 4 KiB fault.\n")
    rows = []
    projections = [(f"host fds, {HOST_RESTORE_PATHS[2][0]}", 10000, HOST_RESTORE_SINGLE, HOST_RESTORE_SINGLE_CALLS,
                    HOST_REARM, HOST_RESTORE_GOAL)]
    if other_kind(run) == "dear":
        projections.append((f"host fds, {HOST_RESTORE_PATHS[1][0]}", 10000, HOST_RESTORE_PATHS[1][1], 0, HOST_REARM,
                            HOST_RESTORE_GOAL))
    projections += [(f"host fds, {label}", 10000, name, calls, HOST_REARM, HOST_RESTORE_GOAL)
                    for (label, name), calls in zip(HOST_RESTORE_PATHS[3:], (1, 0))]
    projections += [("in-memory", n, in_memory_restore_name(n), 0, kernel_add_name(n), RESTORE_GOAL)
                    for n in CHECKPOINT_N]
    projections += [("image file", n, image_name("Restore", n), 0, kernel_add_name(n), RESTORE_GOAL)
                    for n in CHECKPOINT_N]
    for label, n, name, calls, kernel, goal in projections:
        user = projected(run, name, "cpu_time", calls)
        k = kernel_projected(run, kernel, "cpu_time")
        r = ratio(user, k)
        rows.append([label, f"{n:,}", fmt_ns(user), fmt_ns(k), fmt_ratio(r), f"≤ {goal:.3f}",
                     "—" if r is None else ("within" if r <= goal else "above")])
    say(table(["restore", "registrations", "projected ns per registration", "projected kernel re-add",
               "projected ratio", "goal", "projected against the goal"], rows) + "\n")
    return "Restore (the restorer, host fds and in-memory)", out


def syscall_paths_section(run):
    """The two paths of a restore's batches of system calls, each measured alone: (title, Markdown lines)."""
    out = []
    say = out.append
    say("A host-fd restore makes two batches of system calls: the identity check of every fd (`statx`) and, when "
        "the poll's kernel epoll is rebuilt, an `epoll_ctl(ADD)` per entry (lib/src/syscall_batch.h). Each batch "
        "goes through one io_uring (a few kernel entries for the whole batch; a `statx` there is run by a kernel "
        "worker thread) or one call at a time. In a process, the first batch of each kind runs its first items both "
        "ways, timed (the quicker of two runs of each), and that kind keeps the cheaper path (docs/restore.md, "
        "\"System calls in batches\"). Here each path is forced in turn over 10,000 sockets (`BM_StatPath`, "
        "`BM_EpollAddPath`, bench/syscall_path_bench.cc); **auto** is the library's choice. The CPU clock is the "
        "whole process's, so it counts the ring's kernel workers.\n")
    header = ["batch", "path"]
    for _, clock in CLOCKS:
        header.append(f"ns per fd, {clock}")
    header += ["took a ring", "the library's probe: ns per fd alone / on the ring"]
    rows = []
    for kind, bench in (("`statx` (identity check)", "BM_StatPath"), ("`epoll_ctl(ADD)`", "BM_EpollAddPath")):
        for path in ("ring", "single", "auto"):
            name = f"{bench}/{path}"
            row = [kind, path]
            for clock, _ in CLOCKS:
                row.append(fmt_ns(*run.per_unit(name, clock)))
            ring = run.value(name, "ring")
            row.append("—" if ring is None else ("yes" if ring >= 0.999 else "no" if ring <= 0.001 else f"{ring:.2f}"))
            alone, ringed = run.value(name, "probe_single_ns"), run.value(name, "probe_ring_ns")
            row.append("—" if alone is None or ringed is None else f"{fmt_ns(alone)} / {fmt_ns(ringed)}")
            rows.append(row)
    say(table(header, rows) + "\n")
    syscall, _ = machine_costs(run)
    if other_kind(run) == "cheap":
        say(f"One trivial system call costs {fmt_ns(syscall)} ns here (*Machine*). On issue 17's other machine "
            f"({other_machine_costs(run)[0]} ns a system call) an `fstat` measured about 0.3 µs, and a restore's "
            "resolve stage, its `statx` batch on the ring, 1,487 ns per fd: there the probe would keep the calls "
            "alone (not measured here).\n")
    else:
        say(f"One trivial system call costs {fmt_ns(syscall)} ns here (*Machine*), a machine of issue 17's cheap "
            f"kind; on the other ({other_machine_costs(run)[0]:,} ns a system call) the ring saves a system call's "
            "entry per fd and the probe keeps it where it is the cheaper (not measured here).\n")
    return "System-call paths", out


def echo_value(run, name, field, aggregate=AGGREGATE):
    """A counter of the echo benchmark: its aggregate, or its only run when the run had no repetitions."""
    value = run.value(name, field, aggregate)
    return value if value is not None or aggregate != AGGREGATE else run.single(name, field)


def echo_ratio(run, clients, clock):
    field = ECHO_RATE[clock]
    return ratio(echo_value(run, echo_name("epollcr", clients), field),
                 echo_value(run, echo_name("kernel", clients), field))


def fmt_rate(value, cv=None):
    if value is None:
        return "—"
    text = f"{value:,.0f}"
    if cv is not None:
        text += f" (cv {cv * 100:.1f}%)"
    return text


def host_goals_on(run, clock):
    """Goals (l) and (m) on one clock: [(label, threshold, measured, ok or None)]."""
    def measured_of(ratios, label_of):
        absent = [k for k, r in ratios.items() if r is None]
        text = "; ".join(f"{label_of(k)}: {r:.3f}" for k, r in ratios.items() if r is not None) or "—"
        if absent:
            text += " (missing: " + ", ".join(label_of(k) for k in absent) + ")"
        return text, absent

    trips = {t: ratio(run.per_unit(round_trip_name("epollcr", t), clock)[0],
                      run.per_unit(round_trip_name("kernel", t), clock)[0]) for t, _ in ROUND_TRIP_TRIGGERS}
    measured, absent = measured_of(trips, lambda t: t)
    goals = [("(l) a one-byte round trip over a host socket pair through an EventPoll ≤ 1.2 × through the kernel's "
              "epoll", f"≤ {ROUND_TRIP_GOAL:.3f} for " + " and ".join(t for t, _ in ROUND_TRIP_TRIGGERS), measured,
              None if absent else all(r <= ROUND_TRIP_GOAL for r in trips.values()))]
    echoes = {n: echo_ratio(run, n, clock) for n in ECHO_CLIENTS}
    measured, absent = measured_of(echoes, lambda n: f"{n:,} clients")
    goals.append(("(m) the echo server on an EventPoll ≥ 0.9 × its requests/s on a kernel epoll (CPU clock: per "
                  "second of the server's CPU time)",
                  f"≥ {ECHO_GOAL:.3f} at " + ", ".join(f"{n:,}" for n in ECHO_CLIENTS) + " clients", measured,
                  None if absent else all(r >= ECHO_GOAL for r in echoes.values())))
    return goals


def pinned_text(run, names):
    """" (pinned in every case of this run)", or which were not, from the benchmarks' `pinned` counters."""
    values = {name: echo_value(run, name, "pinned") for name in names}
    if None in values.values():
        return ""
    unpinned = [name for name, v in values.items() if v < 1]
    return (" (pinned in every case of this run)" if not unpinned
            else " (not pinned in this run: " + ", ".join(f"`{n}`" for n in unpinned) + ")")


def host_section(run):
    """Host fds: a round trip over a socket pair, and the echo server under load (title, Markdown lines)."""
    out = []
    say = out.append
    trips = [round_trip_name(e, t) for e in ("epollcr", "kernel") for t, _ in ROUND_TRIP_TRIGGERS]
    echoes = [echo_name(e, n) for e in ("epollcr", "kernel") for n in ECHO_CLIENTS]
    say("Real sockets, each an `epollcr::HostFile` in an EventPoll (a kernel entry: the poll registers it in its own "
        "kernel epoll, and a Wait on a poll that has only such entries is one `epoll_pwait2` there plus the "
        "translation of each record; docs/engine.md), beside the kernel's epoll over the same kind of socket.\n")
    say("**Round trip** (`BM_HostRoundTrip`): an `AF_UNIX` `SOCK_STREAM` socket pair. A peer thread, per round, "
        "writes one byte to its (blocking) end and blocks reading the reply. The benchmark thread's end is "
        "non-blocking and registered for EPOLLIN, level-triggered (lt) or with EPOLLET (et); per iteration it waits "
        "with no timeout (kernel: `epoll_wait(ep, events, 8, -1)`; epollcr: `EventPoll::Wait(events, 8, -1)`), checks "
        "that the one event is its socket's EPOLLIN, reads the byte with one `read` and writes it back with one "
        "`write`, the same calls on both engines. Both threads are pinned to the CPU the benchmark thread was on" +
        pinned_text(run, trips) + ": a wake-up on another virtual CPU of this VM costs far more than one on the "
        "same CPU, and unpinned runs land on either at random. Time per round trip. The **wall** figure is the whole round trip: "
        "the peer's write, the wake-up of the waiting thread, its read and write, the peer's wake-up and read. The "
        "**CPU** figure is the benchmark thread's own part (the wait, the read, the write); the peer thread's time "
        "is not on it.\n")
    rows = [side_by_side(run, label, round_trip_name("epollcr", t), round_trip_name("kernel", t))
            for t, label in ROUND_TRIP_TRIGGERS]
    say(table(side_by_side_header("", "ns/round trip"), rows) + "\n")
    warm_up = echo_value(run, echo_name("kernel", ECHO_CLIENTS[0]), "warm_up_s")
    window = echo_value(run, echo_name("kernel", ECHO_CLIENTS[0]), "window_s")
    say("**Echo server** (`BM_EchoServer`): the server of `epollcr demo` and `examples/echo_server` "
        "(`cli/demo/echo_server.h`: accept, read up to 64 KiB, write back what it can and keep the rest, EPOLLIN "
        "level-triggered on every client, EPOLLOUT only while bytes are owed), its loop on an EventPoll over host "
        "files (**userspace**), or the same code with its loop on a kernel epoll (**kernel**: "
        "`EchoServerOptions::kernel_epoll`, only the poll's add, modify, remove and wait calls differ). The server "
        "runs in a process forked for each repetition, listening on 127.0.0.1 (an ephemeral port). The load "
        "generator is the benchmark process: one thread on a kernel epoll, N TCP clients on loopback (TCP_NODELAY), "
        "each keeping exactly one 64-byte request in flight (write 64 bytes, read until the 64 bytes are back, "
        "checked byte for byte, write the next). The server process and the load generator are pinned to two different "
        "CPUs" + pinned_text(run, echoes) + ". After a warm-up that is not counted" +
        ("" if warm_up is None else f" ({warm_up:.2f} s in this run)") + ", the requests completed in a fixed window "
        "of wall clock are counted" + ("" if window is None else f" ({window:.3f} s in this run)") + ". "
        "**wall**: requests per second of the window. **CPU**: requests per second of the *server process's* CPU "
        "time (user + system, read through `clock_getcpuclockid`) in the window: what the server would do with a "
        "CPU to itself. The CPU shares are CPU seconds per second of the window, of the server process and of the "
        "load generator's thread: near 1 when a side had its CPU to itself and was never idle, lower when it waited "
        "for the other side or other work took its CPU. The wall figure is bounded by the slower side.\n")
    header = ["clients"]
    for _, clock in CLOCKS:
        header += [f"userspace requests/s, {clock}", f"kernel requests/s, {clock}", f"ratio, {clock}"]
    header += ["server CPU ns/request, userspace / kernel", "server CPU share, userspace / kernel",
               "load generator CPU share, userspace / kernel"]
    rows = []
    for n in ECHO_CLIENTS:
        row = [f"{n:,}"]
        for clock, _ in CLOCKS:
            field = ECHO_RATE[clock]
            for engine in ("epollcr", "kernel"):
                name = echo_name(engine, n)
                row.append(fmt_rate(echo_value(run, name, field), echo_value(run, name, field, "cv")))
            r = echo_ratio(run, n, clock)
            row.append("—" if r is None else f"{r:.3f}")
        for field, digits in (("server_cpu_ns", 0), ("server_cpu_share", 2), ("client_cpu_share", 2)):
            values = [echo_value(run, echo_name(engine, n), field) for engine in ("epollcr", "kernel")]
            row.append(" / ".join("—" if v is None else f"{v:,.{digits}f}" for v in values))
        rows.append(row)
    say(table(header, rows) + "\n")
    return "Host fds: round trip and echo server", out


def checkpoint_section(run):
    """Checkpoint save and load through the Boost archives, and the memory they use: (title, Markdown lines)."""
    out = []
    say = out.append
    counts = []
    for n in CHECKPOINT_N:
        name = run.resolve(checkpoint_name("Load", "boost-text", n))
        if name in run.singles:
            counts.append(f"N = {n:,}: one run of one call (no cv)")
        else:
            counts.append(f"N = {n:,}: the {AGGREGATE} of {run.repetitions_of(name) or '?'} repetitions")
    ready = {n: run.single(checkpoint_name("Memory", "boost-text", n), "ready_entries") for n in CHECKPOINT_N}
    say("The world: 1,000 eventfds (one in 10 with counter 1), each dup'd so that N fds of the userspace fd table "
        "reach them, every fd registered for EPOLLIN in one EventPoll: N entries, one per (file, fd). Entry k is "
        "level-triggered, edge-triggered or one-shot by k % 3; one harvest of half the ready entries leaves entries on "
        "all three lists (ready entries at save time: " +
        ", ".join(f"{v:,.0f} of {n:,}" for n, v in ready.items() if v is not None) + ").\n")
    say("**Save**: `SaveWorld(world, format)`: the consistent cut, the Boost archive and its envelope (CRC32C); "
        "freeing the returned archive is in the timed region. **locks held** is how long each save held the consistent "
        "cut (`SavePause`: from freezing the fd table to releasing the last lock, wall clock), while no other thread "
        "can use the world: inside it a save writes the pipes' and sockets' bytes and copies every other field as a "
        "number, and it formats the archive after it (docs/design.md, \"Saving, step by step\"). **Load**: "
        "`LoadWorld(archive, &empty_world)`: every file created, the fd table filled, then after_load: every entry back on its saved list and its waiter "
        "registered with its file again. Tearing the loaded world down is outside the timed region. Time per entry = "
        "time per call / N. Runs: " + "; ".join(counts) + ". The 1,000,000-entry cases run one call per "
        "repetition, to keep `scripts/bench` to a few minutes. Each save benchmark (here and in *Checkpoint image*) "
        "first saves its world twice untimed (`WarmUpSaves`, bench/checkpoint_world.h): a process's first saves of a "
        "size fault in the memory its later ones reuse (the cut's kept arrays at the first; at the second, the heap "
        "malloc grows to the output's size), and the figures are those of a program that checkpoints every so often, "
        "from its third save on.\n")
    say("**Kernel baseline**, same run, at the same N: `epoll_ctl(EPOLL_CTL_ADD)` of N registrations of the same "
        "shape into one fresh epoll instance: 1,000 eventfds (one in 10 with counter 1), each registered under N / 1,000 "
        "fd numbers, LT/ET/one-shot by k % 3. This host allows 20,000 fds per process, so above 10,000 the fd numbers "
        "are reused in rounds of 10,000: `dup3` points them at other files (outside the timed region) and the round's "
        "ADDs follow; an entry stays when its fd number moves on, because its file is still open through another fd "
        "(epoll(7), Q6), so the instance ends with N entries, as the restored world does. Making the instance and "
        "closing it (which removes its entries) are outside the timed region. It is what a restorer that re-creates "
        "the entries in the kernel (CRIU) pays per entry, before it has re-created any file. The kernel's cost per "
        "entry grows with N (most likely a deeper red-black tree, and new slab memory for every epitem), so each N "
        "is compared with the kernel at that N. Earlier reports compared every N with the kernel at 10,000 entries, "
        "shown in the last row.\n")
    rows = [[f"kernel `epoll_ctl(EPOLL_CTL_ADD)`, N = {n:,}"] +
            [fmt_ns(*run.per_unit(kernel_add_name(n), clock)) for clock, _ in CLOCKS]
            for n in CHECKPOINT_N + (KERNEL_ADD_OLD_N,)]
    say(table(["", "ns/entry, CPU", "ns/entry, wall"], rows) + "\n")
    say("**Memory**, one save and one load per format and N (the same calls allocate the same blocks, so one run "
        "is the measurement): the **world's heap** is glibc `mallinfo2()` (`uordblks` + `hblkhd`) before and after "
        "building it (files, fd table, poll, entries). The **peak** is the highest heap in use above the level at the "
        "start of the call, counted by the benchmark binary's own global `operator new`/`operator delete` (each "
        "block's `malloc_usable_size` plus its 8-byte chunk header, added on allocation and subtracted on release, "
        "while the call runs: `bench/heap_meter.h`). It is given as a multiple of the world's heap. The peak during "
        "save includes the returned archive; the peak during load includes the loaded world itself" +
        loaded_world_share(run) + ".\n")
    diffs = []
    for fmt in CHECKPOINT_FORMATS:
        for n in CHECKPOINT_N:
            for call in ("save", "load"):
                name = checkpoint_name("Memory", fmt, n)
                meter = run.single(name, f"{call}_net_heap_bytes")
                mallinfo = run.single(name, f"{call}_net_heap_bytes_mallinfo")
                if meter is not None and mallinfo:
                    diffs.append(abs(meter - mallinfo) / abs(mallinfo))
    if diffs:
        say("Blocks obtained with `malloc()` directly would bypass the meter. Check: over the same calls, the meter's "
            f"net change and `mallinfo2()`'s differ by at most {max(diffs) * 100:.2f} % in this run.\n")

    for fmt in CHECKPOINT_FORMATS:
        say(f"### {fmt}\n")
        header = ["N"]
        for _, clock in CLOCKS:
            header += [f"save ns/entry, {clock}", f"load ns/entry, {clock}"]
        header += ["save: locks held ns/entry, wall", "save: locks held / save, wall"]
        header += ["archive bytes/entry", "world heap bytes/entry", "peak during save (× world heap)",
                   "peak during load (× world heap)"]
        for _, clock in CLOCKS:
            header += [f"load / kernel ADD, {clock}", f"verdict, {clock}"]
        rows = []
        for n in CHECKPOINT_N:
            mem = checkpoint_name("Memory", fmt, n)
            heap = run.single(mem, "world_heap_bytes")
            archive = run.single(mem, "archive_bytes")
            row = [f"{n:,}"]
            for clock, _ in CLOCKS:
                row += [fmt_ns(*run.per_unit(checkpoint_name("Save", fmt, n), clock)),
                        fmt_ns(*run.per_unit(checkpoint_name("Load", fmt, n), clock))]
            held, share = locks_held(run, checkpoint_name("Save", fmt, n))
            row += [fmt_ns(held), fmt_share(share)]
            row += ["—" if archive is None else f"{archive / n:.1f}", "—" if heap is None else f"{heap / n:.1f}"]
            for call in ("save", "load"):
                peak = run.single(mem, f"{call}_peak_heap_bytes")
                row.append("—" if peak is None or not heap else f"{peak / heap:.2f}")
            for clock, _ in CLOCKS:
                r = load_ratio(run, fmt, n, clock)
                row += [fmt_ratio(r), verdict(None if r is None else r <= LOAD_GOAL)]
            rows.append(row)
        say(table(header, rows) + "\n")
    out += buffered_lines(run)
    return "Checkpoint save and load", out


def preamble(run, build_dir, command):
    """The title, how the report was made, and the machine: Markdown lines."""
    out = []
    say = out.append
    say("# epollcr benchmarks\n")
    say("Generated by `scripts/bench_report.py` from one run of `bench/epollcr_bench` (and, for *Real programs under "
        "epollcr run*, one run of `bench/real_programs_bench`); do not edit by hand. "
        f"Each figure is the {AGGREGATE} of {run.repetitions} repetitions (cv = coefficient of variation across them) "
        "unless its section says otherwise.\n")
    say(f"Command: `{command}`\n")
    say("Two clocks, both recorded by Google Benchmark and both reported: **CPU** is the benchmark thread's CPU time "
        "(user + system, so the kernel's work inside the system calls counts); **wall** also counts the time the "
        "thread waited for a CPU, which on a shared machine belongs to other processes. Goals are judged on each "
        "clock separately. Kernel work deferred out of the calling thread (e.g. RCU freeing after a DEL) is not in "
        "the kernel's CPU figure, which can only make the kernel look cheaper.\n")

    say("## Machine\n")
    rows = machine(build_dir, run)
    for clock, name in CLOCKS:
        rows.append((f"One trivial system call (getppid), measured, {name}",
                     f"{fmt_ns(*run.per_unit('BM_NullSyscall_Kernel', clock))} ns"))
    rows.append(("One atomic read-modify-write, in the cache (`BM_AtomicAdd`), CPU",
                 f"{fmt_ns(*run.per_unit('BM_AtomicAdd', 'cpu_time'))} ns"))
    rows.append(("A try_lock and unlock of a mutex, each of 1,000 in objects of their own, as a save's cut takes every "
                 "file's lock (`BM_MutexCycle`), CPU",
                 f"{fmt_ns(*run.per_unit('BM_MutexCycle', 'cpu_time'))} ns"))
    plain = run.value("BM_NullSyscall_Filtered", "per_call_plain")
    filtered = run.value("BM_NullSyscall_Filtered", "per_call_filtered")
    if plain is not None and filtered is not None:
        rows.append(("The same call under `epollcr run`'s seccomp filter (`BM_NullSyscall_Filtered`: one child "
                     "process times it before and after installing the filter), CPU",
                     f"{fmt_ns(filtered, None)} ns against {fmt_ns(plain, None)} ns "
                     f"({filtered - plain:+.0f} ns per system call)"))
    for huge, idle, what in ((0, 0, "4 KiB pages"), (1, 0, "madvise(MADV_HUGEPAGE), memory freed just before"),
                             (1, 5, "madvise(MADV_HUGEPAGE), after 5 s idle (the host took the free memory back)")):
        rows.append((f"Touching fresh anonymous memory, {what} (`BM_PageFault`), CPU, per 4 KiB",
                     f"{fmt_ns(*run.per_unit(f'BM_PageFault/huge:{huge}/idle_s:{idle}', 'cpu_time'))} ns"))
    say(table(["", ""], rows) + "\n")
    load = run.context.get("load_avg", [])
    cpus = run.context.get("num_cpus", 0)
    if load and cpus and load[0] > cpus:
        say(f"The machine was busy with other work when the run started (1-minute load {load[0]:.2f} on {cpus} CPUs): "
            "wall-clock figures are noisier, and slower, than on an idle machine; compare them with the CPU figures "
            "and the cv columns.\n")
    say("Every kernel figure below includes entering and leaving the kernel (one to three system calls per "
        "iteration). On a virtual machine that cost can be far above bare metal, which makes the userspace/kernel "
        "ratios look better than they would there; the system-call rows above are this machine's figure.\n")
    return out


def notify_harvest_section(run):
    """Notify + harvest, one ready entry among N: (title, Markdown lines)."""
    return "Notify + harvest: 1 ready among N registered", [
        "Per iteration, on one of N level-triggered EPOLLIN eventfd entries, chosen round-robin: userspace "
        "`EventFd::WriteValue(1)` + `EventPoll::ReadEvents(events, 8)` + `EventFd::ReadValue()`; kernel "
        "`write(efd, 8)` + `epoll_wait(ep, events, 8, 0)` + `read(efd, 8)`. Each iteration checks that exactly "
        f"the notified entry was reported. The kernel side stops at N = {KERNEL_MAX_N:,}: this host allows 20,000 fds "
        "per process (hard limit) and the benchmark raises nothing.\n",
        table(side_by_side_header("N", "ns/event"),
              [side_by_side(run, f"{n:,}", f"BM_NotifyHarvest_Userspace/n:{n}",
                            f"BM_NotifyHarvest_Kernel/n:{n}" if n <= KERNEL_MAX_N else None)
               for n in N_VALUES]) + "\n"]


def ready_batch_section(run):
    """One harvest of 1000 level-triggered ready entries: (title, Markdown lines)."""
    return "One harvest of 1000 level-triggered ready entries", [
        "1000 eventfds with counter 1, registered level-triggered for EPOLLIN, so all stay ready: userspace "
        "`ReadEvents(events, 1000)` vs kernel `epoll_wait(ep, events, 1000, 0)`; each call must return 1000. "
        "Cost per reported event.\n",
        table(side_by_side_header("", "ns/event"),
              [side_by_side(run, "1000 LT ready", "BM_ReadEvents1000_Userspace", "BM_ReadEvents1000_Kernel")]) + "\n"]


def add_remove_section(run):
    """AddEntry + RemoveEntry beside 1000 entries: (title, Markdown lines)."""
    return "AddEntry + RemoveEntry beside 1000 registered entries", [
        "One more eventfd (not ready) added for EPOLLIN and removed again, per pair: userspace "
        "`AddEntry` + `RemoveEntry` vs kernel `epoll_ctl(ADD)` + `epoll_ctl(DEL)`, with 1000 other entries "
        "registered.\n",
        table(side_by_side_header("", "ns/pair"),
              [side_by_side(run, "ADD + DEL", "BM_AddRemove_Userspace", "BM_AddRemove_Kernel")]) + "\n"]


MEMORY_NAME = "BM_MemoryPerEntry_Userspace/iterations:1"


def memory_section(run):
    """Heap bytes per registered entry: (title, Markdown lines)."""
    mem = run.value(MEMORY_NAME, "bytes_per_entry")
    mem_cv = run.value(MEMORY_NAME, "bytes_per_entry", "cv")
    rows = [("userspace, measured", "—" if mem is None else f"{mem:.1f}" +
             ("" if mem_cv is None else f" (cv {mem_cv * 100:.1f}%)"))]
    for key, value in sorted(run.context.items()):
        if key.startswith("kernel_slab_objsize_"):
            rows.append((f"kernel `{key.removeprefix('kernel_slab_objsize_')}` slab object size, read from "
                         "/proc/slabinfo (declared, not measured)", value))
    return "Memory per registered entry (userspace)", [
        "glibc `mallinfo2()` heap in use (`uordblks` + `hblkhd`, so blocks malloc serves with mmap count too) "
        "before and after registering 100,000 eventfds that already exist; the difference divided by 100,000. "
        "It counts the entries and the entries map's bucket array, not the files.\n",
        table(["", "bytes per entry"], rows) + "\n"]


def libevent_name(engine, n):
    return f"BM_Libevent_{engine}/n:{n}"


def libevent_per_read(run, engine, n, clock):
    """ns per read callback: the time per round over the reads a round makes (A + W)."""
    per_round = run.per_unit(libevent_name(engine, n), clock)[0]
    reads = run.value(libevent_name(engine, n), "reads_per_round")
    return None if per_round is None or not reads else per_round / reads


def libevent_section(run):
    """The libevent benchmark shape on both engines: (title, Markdown lines)."""
    out = []
    say = out.append
    shape = {key: run.value(libevent_name("Userspace", LIBEVENT_N[-1]), key) for key in ("active", "writes")}
    say("The loop of libevent's `test/bench.c`, on both engines: N pipes, the read end of each registered "
        "level-triggered for EPOLLIN; A = min(N, 100) pipes active, W = 100 writes per round. A round writes one byte "
        "into the A active pipes (pipe k·N/A), then polls without blocking, 64 events at most per poll, and runs a "
        "read callback per reported pipe until every byte written has been read; a callback reads its pipe's byte "
        "and, while fewer than W writes have been made in the round, writes one byte into the next pipe. So a round "
        "is A + W reads and as many writes, and ends with every pipe empty. Userspace: `EventPoll::Wait(events, 64, 0)` "
        "over epollcr's in-memory pipes, `PipeReadEnd::Read` and `PipeWriteEnd::Write`; kernel: "
        "`epoll_wait(ep, events, 64, 0)` over `pipe2(O_NONBLOCK)` pipes, `read` and `write`. Timed: one round, from "
        "the first active write to the last read (bench.c's event-loop time; its re-registration of all N events "
        "before each round is not timed here, *AddEntry + RemoveEntry* measures registration). The kernel side stops "
        f"at N = {LIBEVENT_KERNEL_MAX_N:,}: a kernel pipe is 2 fds and this host allows 20,000 fds per process. "
        "epollcr's pipe, like `fs/pipe.c`, takes a 4 KiB page for a write into an empty pipe and gives it back when "
        "the pipe is read empty; it takes the page from malloc, so where glibc trims the top of its heap between "
        "rounds, a round can also pay page faults (see *Machine*).\n")
    if None not in shape.values():
        say(f"This run: A = {shape['active']:.0f} (N = {LIBEVENT_N[-1]:,}), W = {shape['writes']:.0f}.\n")
    say("**Time per round** (the ratio is the headline):\n")
    rows = [side_by_side(run, f"{n:,}", libevent_name("Userspace", n),
                         libevent_name("Kernel", n) if n <= LIBEVENT_KERNEL_MAX_N else None) for n in LIBEVENT_N]
    say(table(side_by_side_header("N", "ns/round"), rows) + "\n")
    say("**Per read callback** (time per round / (A + W)), and the polls a round took (the same on both engines "
        "when they report the same pipes in the same order):\n")
    rows = []
    for n in LIBEVENT_N:
        row = [f"{n:,}"]
        for clock, _ in CLOCKS:
            row += [fmt_ns(libevent_per_read(run, engine, n, clock)) for engine in ("Userspace", "Kernel")]
        polls = [run.value(libevent_name(engine, n), "polls_per_round") for engine in ("Userspace", "Kernel")]
        row.append(" / ".join("—" if p is None else f"{p:.2f}" for p in polls))
        rows.append(row)
    header = ["N"]
    for _, clock in CLOCKS:
        header += [f"userspace ns/read, {clock}", f"kernel ns/read, {clock}"]
    header.append("polls per round, userspace / kernel")
    say(table(header, rows) + "\n")
    say("No earlier issue sets a goal for this shape, so it has no verdict.\n")
    return "The libevent benchmark shape: N pipes, A active, W writes per round", out


# ---- real programs under `epollcr run` (bench/real_programs_bench.cc, its own JSON) ----------------------------------

def real_value(real, name, field, aggregate=AGGREGATE):
    """A counter of a real-program case: its aggregate, or its only run when the run had no repetitions."""
    if real is None:
        return None
    value = real.value(name, field, aggregate)
    return value if value is not None or aggregate != AGGREGATE else real.single(name, field)


def real_ratio(real, program, connections, clock):
    field = REAL_RATE[clock]
    return ratio(real_value(real, real_name(program, "epollcr", connections), field),
                 real_value(real, real_name(program, "kernel", connections), field))


def real_verdict(real, program, connections, clock):
    """(ratio or None, ok or None) of one case on one clock. A case that failed under `epollcr run` (in any
    repetition) does not meet the goal, whatever the other repetitions measured; a case missing otherwise is not
    measured."""
    r = real_ratio(real, program, connections, clock)
    epollcr_failed = real_failures(real, real_name(program, "epollcr", connections))
    if epollcr_failed:
        kernel = real_value(real, real_name(program, "kernel", connections), REAL_RATE[clock])
        return r, (False if kernel is not None or r is not None else None)
    return r, (None if r is None else r >= REAL_GOAL)


def real_failures(real, name):
    """"" if no repetition of the case failed, else how many failed and the first failure. After a failure
    bench/real_programs_bench does not run the case's later repetitions ("not run: ...")."""
    if real is None:
        return ""
    messages, total = real.error_runs.get(real.resolve(name), ([], 0))
    failed = [m for m in messages if not m.startswith("not run:")]
    if not messages:
        return ""
    skipped = len(messages) - len(failed)
    text = f"failed in {len(failed)} of {total} repetitions"
    if skipped:
        text += f" ({skipped} not run after the failure)"
    return text + ": " + (failed[0] if failed else messages[0])


def real_programs_goals_on(real, clock):
    """Goal (n) on one clock: [(label, threshold, measured, ok or None)]."""
    cases = {(p, n): real_verdict(real, p, n, clock) for p, *_ in REAL_PROGRAMS for n in REAL_CONNECTIONS}
    measured = "; ".join(f"{p}/{n}: {r:.3f}" for (p, n), (r, _) in cases.items() if r is not None) or "—"
    failed = [(p, n) for p, n in cases if real_failures(real, real_name(p, "epollcr", n))]
    absent = [k for k, (r, ok) in cases.items() if r is None and ok is None]
    if failed:
        measured += " (failed under `epollcr run`: " + ", ".join(f"{p}/{n}" for p, n in failed) + ")"
    if absent:
        measured += " (missing: " + ", ".join(f"{p}/{n}" for p, n in absent) + ")"
    oks = [ok for _, ok in cases.values()]
    verdict_ok = False if False in oks else None if None in oks else True
    return [("(n) redis-server, nginx and memcached under `epollcr run` ≥ 0.9 × their requests/s on the kernel's "
             "epoll (CPU clock: per second of the server's CPU time)",
             f"≥ {REAL_GOAL:.3f} for each program at " + ", ".join(f"{n:,}" for n in REAL_CONNECTIONS) +
             " connections", measured, verdict_ok)]


def package_versions(packages):
    """{package: version} of the installed Debian packages, read at report time (dpkg-query)."""
    versions = {}
    try:  # dpkg-query exits 1 when one of the packages is not installed, and still lists the others
        listed = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"] + packages,
                                capture_output=True, text=True).stdout
    except OSError:
        listed = ""
    for line in listed.splitlines():
        name, _, version = line.partition(" ")
        if version:
            versions[name] = version
    return versions


def real_programs_section(real, command):
    """Real servers under their load tools, on the kernel's epoll and under `epollcr run`: (title, Markdown lines)."""
    title = "Real programs under epollcr run"
    out = []
    say = out.append
    say("Unmodified servers from Debian's packages, each on the kernel's epoll (**kernel**: the command line as "
        "below) and under `epollcr run` (**epollcr**: the same command line after `epollcr run --log "
        "DIR/epollcr.log --`, which preloads `libepollcr-preload.so` so that every epoll instance the server makes "
        "is an epollcr EventPoll; docs/interposer.md), in the same run of `bench/real_programs_bench` "
        "(`bench/real_programs_bench.cc`). Per repetition: a fresh temporary folder (DIR), a free port on 127.0.0.1 "
        "(PORT), the server started in a process group of its own and probed until it answers on the port (redis "
        "PING, an HTTP GET, memcached `version`), then one run of its load tool, then the server stopped with "
        "SIGTERM and every process reaped; a repetition fails if the server does not come up, dies, exits other than "
        "with status 0 when stopped, or if the load tool fails or reports an error. The repetitions of all cases are "
        "interleaved at random. The server is pinned to one CPU and the load tool, one thread, to another, the same "
        "on both engines.\n")
    say("**wall**: the load tool's own requests per second (redis-benchmark: its SET and GET tests together, the "
        "requests over the sum of their times). **CPU**: requests per second of the server's CPU time (user + system "
        "of every process in its process group, read from `/proc/PID/stat` before and after the load run, in 10 ms "
        "ticks): what the server would do with a CPU to itself. The server CPU share is its CPU seconds per second of "
        "the load run: well below 1, the load tool (on its one CPU) is what bounds the wall figure, and the CPU "
        "figure is the one that shows what the poll costs the server. Under `epollcr run`, `--log` records each "
        "epoll instance the interposer made and, per process at its exit, its waits and events: the case fails if "
        "the server made no epoll through epollcr.\n")
    if real is not None:
        pins = {real_name(p, e, n): real_value(real, real_name(p, e, n), "pinned")
                for p, _ in REAL_PROGRAMS for e in ("kernel", "epollcr") for n in REAL_CONNECTIONS}
        unpinned = [f"`{name}`" for name, v in pins.items() if v is not None and v < 1]
        if any(v is not None for v in pins.values()):
            say("Pinning: " + ("both pins took in every case that ran." if not unpinned
                               else "not pinned in " + ", ".join(unpinned) + ".") + "\n")
    if real is None:
        say("Not run: `scripts/bench` found none of the servers with its load tool (Debian packages redis-server and "
            "redis-tools, nginx-light and wrk, memcached and libmemcached-tools), or the report was written without "
            "`--real-json`.\n")
        return title, out
    context = real.context
    say(f"Command: `{command}`. Run started {context.get('date', 'unknown')}, load average at the start " +
        (", ".join(f"{x:.2f}" for x in context.get("load_avg", [])) or "unknown") +
        f"; each figure is the {AGGREGATE} of the repetitions that ran (cv across them).\n")
    if "real_programs_epollcr" in context:
        say(f"epollcr: `{context['real_programs_epollcr']}`.\n")
    versions = package_versions([pkg for _, pkgs in REAL_PROGRAMS for pkg in pkgs.split()])
    rows = []
    for program, packages in REAL_PROGRAMS:
        key = f"real_programs_{program}"
        rows.append([program, f"`{context[key + '_server']}`" if key + "_server" in context else "—",
                     f"`{context[key + '_load']}`" if key + "_load" in context else "—",
                     ", ".join(f"{p} {versions[p]}" for p in packages.split() if p in versions) or "not installed"])
    say(table(["program", "server command line", "load tool command line", "Debian packages (at report time)"], rows)
        + "\n")
    if "real_programs_nginx_config" in context:
        say(f"nginx's configuration, on one line: `{context['real_programs_nginx_config']}`\n")
    header = ["program", "connections"]
    for _, clock in CLOCKS:
        header += [f"kernel requests/s, {clock}", f"epollcr requests/s, {clock}", f"ratio, {clock}",
                   f"(n) verdict, {clock}"]
    header += ["server CPU share, kernel / epollcr", "epollcr: polls / waits / events per run"]
    rows = []
    failures = []
    for program, *_ in REAL_PROGRAMS:
        for n in REAL_CONNECTIONS:
            names = {engine: real_name(program, engine, n) for engine in ("kernel", "epollcr")}
            row = [program, f"{n:,}"]
            for clock, _ in CLOCKS:
                field = REAL_RATE[clock]
                for engine, name in names.items():
                    failed = real_failures(real, name)
                    value = real_value(real, name, field)
                    cell = fmt_rate(value, real_value(real, name, field, "cv"))
                    if failed:
                        cell += " (failed: see below)" if value is not None else " failed: see below"
                    row.append(cell)
                r, ok = real_verdict(real, program, n, clock)
                row += ["—" if r is None else f"{r:.3f}", verdict(ok)]
            shares = [real_value(real, name, "server_cpu_share") for name in names.values()]
            row.append(" / ".join("—" if v is None else f"{v:.2f}" for v in shares))
            counts = [real_value(real, names["epollcr"], f) for f in ("epollcr_polls", "epollcr_waits",
                                                                     "epollcr_events")]
            row.append(" / ".join("—" if v is None else f"{v:,.0f}" for v in counts))
            rows.append(row)
            for engine, name in names.items():
                failed = real_failures(real, name)
                if failed:
                    failures.append([f"`{name}`", failed.replace("|", "\\|")])
    say(table(header, rows) + "\n")
    if failures:
        say("**Failures** (a repetition that failed has no figures; the error is the benchmark's, with the tail of the "
            "server's output and logs):\n")
        say(table(["case", "what failed"], failures) + "\n")
    return title, out


# The numbered sections, in order: each is a function of the run that returns (title, Markdown lines).
# ---- the live hand-off (issue 17) ------------------------------------------------------------------------------------

HANDOFF_DEMO = "BM_HandOffDemo/clients:"
HANDOFF_STALL_GOAL_MS = 20.0
HANDOFF_GOAL_CLIENTS = 10000


def handoff_clients(run):
    """The client counts BM_HandOffDemo ran (or tried), ascending."""
    ns = set()
    for name in list(run.aggregates) + list(run.errors):
        if name.startswith(HANDOFF_DEMO):
            try:
                ns.add(int(name[len(HANDOFF_DEMO):].split("/")[0]))
            except ValueError:
                pass
    return sorted(ns)


def handoff_name(n):
    return f"{HANDOFF_DEMO}{n}"


def handoff_marginal(run):
    """[(from N, to N, ns per registration of the pause between them)]: the cost one more registration adds."""
    out = []
    ns = [n for n in handoff_clients(run) if run.value(handoff_name(n), "pause_ms") is not None]
    for a, b in zip(ns, ns[1:]):
        pa, pb = run.value(handoff_name(a), "pause_ms"), run.value(handoff_name(b), "pause_ms")
        ra, rb = run.value(handoff_name(a), "registrations"), run.value(handoff_name(b), "registrations")
        if None not in (pa, pb, ra, rb) and rb > ra:
            out.append((a, b, (pb - pa) * 1e6 / (rb - ra)))
    return out


def handoff_section(run):
    """The live hand-off under traffic, as clients see it: (title, Markdown lines)."""
    out = []
    say = out.append
    say("`epollcr demo` (`BM_HandOffDemo`, bench/handoff_bench.cc; restore/successor.h, docs/restore.md \"Live "
        "hand-off\"): the echo server of *Host fds* on an EventPoll, N TCP clients on loopback driven by the benchmark "
        "process, 10,000 messages of 64 bytes a second over all of them, spread evenly (each client keeps up to 8 in "
        "flight), about 20,000 messages in all (at least 2 per client). Once every client is connected the server "
        "starts its successor (fork, exec of this binary as the demo's server, the world's fds inherited); once half "
        "the messages are echoed it hands the world over: the pause. Every message is timed from the write of its "
        "first byte to the read of its last echoed byte. **stall**: the latency of the messages in flight across the "
        "pause (sent before it ended, echoed after it began), max and p99; **outside**: the same of every other "
        "message. **pause**: from the predecessor's HandOver call to the successor's confirmation that it serves "
        "(stages: save = the image encoded into the memory both share, send = the header and the fds opened since "
        "the successor started, restore = until the successor says it restored, go = the confirmation). Each row: "
        "the median of 5 runs; the worst of the 5 beside it. Lost and corrupt: the worst run.\n")
    header = ["clients", "registrations", "stall max, ms (median / worst)", "stall p99, ms", "outside max, ms",
              "outside p99, ms", "pause, ms (median / worst)", "save / send / restore / go, ms",
              "pause ns per registration", "successor ready after, ms", "messages across the pause", "lost", "corrupt"]
    rows = []

    def v(name, field, aggregate=AGGREGATE, digits=2):
        x = run.value(name, field, aggregate)
        return "—" if x is None else f"{x:,.{digits}f}"

    for n in handoff_clients(run):
        name = handoff_name(n)
        if run.value(name, "pause_ms") is None:
            rows.append([f"{n:,}", "—", f"not run: {run.missing(name)}"] + ["—"] * (len(header) - 3))
            continue
        rows.append([f"{n:,}", v(name, "registrations", digits=0),
                     f"{v(name, 'stall_max_ms')} / {v(name, 'stall_max_ms', 'max')}", v(name, "stall_p99_ms"),
                     v(name, "outside_max_ms"), v(name, "outside_p99_ms"),
                     f"{v(name, 'pause_ms')} / {v(name, 'pause_ms', 'max')}",
                     " / ".join(v(name, f) for f in ("save_ms", "send_ms", "restore_ms", "go_ms")),
                     v(name, "pause_ns_per_registration", digits=0), v(name, "successor_ready_ms", digits=1),
                     v(name, "in_flight", digits=0), v(name, "lost", "max", 0), v(name, "corrupt", "max", 0)])
    say(table(header, rows) + "\n")
    marginal = handoff_marginal(run)
    if marginal:
        say("**Cost per registration.** The pause has a part that does not grow with N (the messages between the "
            "processes, the successor's wake-up) and a part per registration. What one more registration adds, "
            "between the client counts measured: " +
            "; ".join(f"{a:,} → {b:,}: {c:,.0f} ns" for a, b, c in marginal) + ".\n")
    say("**In-process stages** (ns per registration, CPU, median): `BM_HandOffSave` is `image::SaveImageInto` with "
        "`host_open_state = false` (what the predecessor does in the pause) of a world of N socket fds in one poll; "
        "`BM_HandOffRestore` is `restore::RestoreBytes` of that image with `InheritedFdResolver::Trusted`, the kernel "
        "epoll taken over as a successor takes it (`AcceptHandedOver`), both in a warm process.\n")
    rows = []
    for n in (1000, 10000):
        save, save_cv = run.per_unit(f"BM_HandOffSave/registrations:{n}", "cpu_time")
        rest, rest_cv = run.per_unit(f"BM_HandOffRestore/registrations:{n}", "cpu_time")
        rows.append([f"{n:,}", fmt_ns(save, save_cv), fmt_ns(rest, rest_cv)])
    say(table(["registrations", "save ns/registration", "restore ns/registration"], rows) + "\n")
    return "Hand-off under traffic: the stall clients see", out


def handoff_goals(run):
    """Issue 17's hand-off goals, which have no clock: [(label, threshold, measured, ok or None)]."""
    out = []
    name = handoff_name(HANDOFF_GOAL_CLIENTS)
    stall, worst = run.value(name, "stall_max_ms"), run.value(name, "stall_max_ms", "max")
    out.append((f"(o) hand-off of {HANDOFF_GOAL_CLIENTS:,} connections: max stall a client sees (median of 5 runs)",
                f"≤ {HANDOFF_STALL_GOAL_MS:.0f} ms",
                "—" if stall is None else f"{stall:.2f} ms (worst run {worst:.2f} ms)",
                None if stall is None else stall <= HANDOFF_STALL_GOAL_MS))
    ns = handoff_clients(run)
    lost = [run.value(handoff_name(n), "lost", "max") for n in ns]
    corrupt = [run.value(handoff_name(n), "corrupt", "max") for n in ns]
    known = [x for x in lost + corrupt if x is not None]
    out.append(("(p) hand-off: messages lost or corrupt, every client count, every run", "0",
                "—" if not known else f"{sum(x for x in lost if x is not None):.0f} lost, "
                f"{sum(x for x in corrupt if x is not None):.0f} corrupt",
                None if len(known) != 2 * len(ns) or not ns else sum(known) == 0))
    marginal = [c for a, b, c in handoff_marginal(run) if a >= 1000 and b <= HANDOFF_GOAL_CLIENTS]
    flat = None
    if len(marginal) >= 2:
        flat = max(marginal) <= 1.25 * min(marginal)
    out.append(("(q) hand-off: pause per added registration flat from 1,000 to 10,000 (±25 %)", "±25 %",
                "—" if not marginal else " / ".join(f"{c:,.0f} ns" for c in marginal), flat))
    return out


# ---- TCP connections by value (issue 18) -----------------------------------------------------------------------

TCP_BY_VALUE_CONNECTIONS = (1000, 10000)
TCP_BY_VALUE_GOAL = 2.0  # by-value restore per connection, against the by-reference hand-off's per registration


def tcp_by_value_name(n):
    return f"BM_TcpByValue/connections:{n}"


def tcp_by_value_rows(run):
    """[(n, save, close, restore, by-reference save, by-reference restore)], ns per connection (None if not run)."""
    rows = []
    for n in TCP_BY_VALUE_CONNECTIONS:
        name = tcp_by_value_name(n)
        by_ref_save, _ = run.per_unit(f"BM_HandOffSave/registrations:{n}", "real_time")
        by_ref_restore, _ = run.per_unit(f"BM_HandOffRestore/registrations:{n}", "real_time")
        rows.append((n, run.value(name, "save_ns"), run.value(name, "close_ns"), run.value(name, "restore_ns"),
                     by_ref_save, by_ref_restore))
    return rows


def tcp_by_value_section(run):
    """TCP connections moved by value against the by-reference hand-off: (title, Markdown lines)."""
    out = []
    say = out.append
    say("`BM_TcpByValue` (bench/tcp_by_value_bench.cc; restore/tcp_image.h, docs/restore.md \"TCP connections by "
        "value\"): N established loopback TCP connections, each a host file registered for EPOLLIN in one EventPoll "
        "(the peers' ends in a child process), moved by value round after round in one process: **save** is "
        "`TcpByValue::Save` (each connection captured with TCP_REPAIR into the image, and the network lock that drops "
        "the peers' segments until the rebuild installed: restore/network_lock.h), **close** is `CloseAll` (each "
        "closed in repair mode), **restore** is `restore::RestoreBytes` with a `TcpResolver` into a new world (each "
        "connection rebuilt at its fd number and registered again, the lock removed). Wall clock per connection, the median of the "
        "rounds, then of the repetitions. Beside it, the by-reference hand-off of as many registrations in the same "
        "run (`BM_HandOffSave`, `BM_HandOffRestore`, wall clock per registration: the socket itself is handed over, "
        "no system call per fd).\n")
    rows = []
    for n, save, close, restore, ref_save, ref_restore in tcp_by_value_rows(run):
        if restore is None:
            rows.append([f"{n:,}", "—", "—", f"not run: {run.missing(tcp_by_value_name(n))}", "—", "—", "—"])
            continue
        rows.append([f"{n:,}", fmt_ns(save), fmt_ns(close), fmt_ns(restore), fmt_ns(ref_save), fmt_ns(ref_restore),
                     "—" if not ref_restore else f"{restore / ref_restore:.1f}"])
    say(table(["connections", "by value: save", "close", "restore", "by reference: save", "restore",
               "restore, by value / by reference"], rows) + "\n")
    floor_socket, _ = run.per_unit("BM_TcpRebuildFloor/steps:1", "cpu_time")
    floor_whole, _ = run.per_unit("BM_TcpRebuildFloor/steps:4", "cpu_time")
    ref_restores = [r[5] for r in tcp_by_value_rows(run) if r[5]]
    say("What the kernel itself takes, with no epollcr code (`BM_TcpRebuildFloor`, 10,000 sockets, CPU clock per "
        "socket, the closes not timed): **socket(2) alone**, the first step of any rebuild, and **socket, TCP_REPAIR, "
        "bind and connect** (no SYN in repair mode), the least that puts a connection back under its addresses.\n")
    floor_rows = [["socket alone", "—" if floor_socket is None else fmt_ns(floor_socket)],
                  ["socket, TCP_REPAIR, bind, connect", "—" if floor_whole is None else fmt_ns(floor_whole)]]
    say(table(["the kernel's work per socket", "ns"], floor_rows) + "\n")
    text = ("A rebuild (restore/tcp_repair.cc `Build`) makes, for a connection whose options are what a new socket has "
            "and whose queues are empty: the socket, repair mode on, two queue selections with their sequence numbers, "
            "bind, connect, the TCP options, the timestamp, the window, the send buffer, repair mode off; then the "
            "registration. Options a new socket has already are not set again (`TcpDefaults`), and a socket is made at "
            "its own fd number where that number is free (no second fd). The by-reference hand-off makes no system "
            "call per fd at all.")
    if floor_whole is not None and ref_restores:
        budget = TCP_BY_VALUE_GOAL * min(ref_restores)
        text += (f" The goal allows {fmt_ns(budget)} ns per connection (2 × the by-reference restore, its lower of the "
                 f"two N). The least that puts a connection back under its addresses, socket, TCP_REPAIR, bind and "
                 f"connect, takes the kernel {fmt_ns(floor_whole)} ns" +
                 ("" if floor_socket is None else f" (socket(2) alone: {fmt_ns(floor_socket)} ns)") +
                 ", on the CPU clock, which is never more than the wall clock the restore is measured on")
        if floor_whole > budget:
            text += (": above the goal, so no rebuild of a kernel socket can meet it on this machine, whatever it does "
                     "around the kernel's own work. That work is not a system call's entry, which is a small part of "
                     "it (*Machine*: the null system call), so a machine with dearer system calls is further from it.")
        else:
            text += ": below the goal."
    say(text + "\n")
    return "TCP connections by value", out


def tcp_by_value_goals(run):
    """Issue 18's goal, which has no clock: [(label, threshold, measured, ok or None)]."""
    measured, ratios = [], []
    for n, _, _, restore, _, ref_restore in tcp_by_value_rows(run):
        if restore is None or not ref_restore:
            measured.append(f"N={n:,}: not run")
            ratios.append(None)
            continue
        measured.append(f"N={n:,}: {restore / ref_restore:.1f} ({restore:,.0f} / {ref_restore:,.0f} ns)")
        ratios.append(restore / ref_restore)
    ok = None if None in ratios else all(r <= TCP_BY_VALUE_GOAL for r in ratios)
    return [("(v) TCP by value: restore per connection ≤ 2 × the by-reference hand-off's restore per registration",
             f"≤ {TCP_BY_VALUE_GOAL:.2f} at N = 1,000, 10,000", "; ".join(measured), ok)]


SECTIONS = (
    notify_harvest_section,
    ready_batch_section,
    add_remove_section,
    memory_section,
    libevent_section,
    checkpoint_section,
    image_section,
    restore_section,
    syscall_paths_section,
    host_section,
    handoff_section,
    tcp_by_value_section,
    lambda run: real_programs_section(run.real, run.real_command),
)


# ---- plots: what each one shows, drawn by scripts/plot (gnuplot) --------------------------------------------------

PLOT_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot")


def event_cost_plot(run):
    """Cost per event against N registered, both engines, CPU clock: notify+harvest and the libevent shape."""
    def points(name_of, ns):
        return [(n, run.per_unit(name_of(n), "cpu_time")[0]) for n in ns]

    def libevent_points(engine, ns):
        return [(n, libevent_per_read(run, engine, n, "cpu_time")) for n in ns]

    kernel_n = [n for n in N_VALUES if n <= KERNEL_MAX_N]
    kernel_libevent_n = [n for n in LIBEVENT_N if n <= LIBEVENT_KERNEL_MAX_N]
    return {
        "name": "cost-per-event",
        "title": "Cost per event against N registered (CPU clock, median)",
        "xlabel": "N registered", "ylabel": "ns per event", "log": ["x", "y"],
        "series": [
            {"title": "epollcr: notify + harvest, 1 ready of N",
             "points": points(lambda n: f"BM_NotifyHarvest_Userspace/n:{n}", N_VALUES)},
            {"title": "kernel: write + epoll_wait + read, 1 ready of N",
             "points": points(lambda n: f"BM_NotifyHarvest_Kernel/n:{n}", kernel_n)},
            {"title": "epollcr: libevent shape, per read callback",
             "points": libevent_points("Userspace", LIBEVENT_N)},
            {"title": "kernel: libevent shape, per read callback",
             "points": libevent_points("Kernel", kernel_libevent_n)},
        ],
    }


def restore_cost_plot(run):
    """Cost per restored entry against N, CPU clock: each checkpoint format's load, and the kernel's re-add."""
    series = [{"title": f"{fmt}: LoadWorld",
               "points": [(n, run.per_unit(checkpoint_name("Load", fmt, n), "cpu_time")[0]) for n in CHECKPOINT_N]}
              for fmt in CHECKPOINT_FORMATS]
    series.append({"title": "protobuf image: read + decode + validate + restore",
                   "points": [(n, run.per_unit(image_name("Restore", n), "cpu_time")[0]) for n in CHECKPOINT_N]})
    series.append({"title": "kernel: epoll_ctl ADD of N entries into one instance (the goals' baseline)",
                   "points": [(n, run.per_unit(kernel_add_name(n), "cpu_time")[0]) for n in CHECKPOINT_N]})
    return {
        "name": "cost-per-restored-entry",
        "title": "Cost per restored entry against N entries (CPU clock, median)",
        "xlabel": "N entries", "ylabel": "ns per entry", "log": ["x", "y"],
        "series": series,
    }


def handoff_stall_plot(run):
    """The stall clients see and the pause against N connections, with the goal's line."""
    ns = handoff_clients(run)

    def points(field, aggregate=AGGREGATE):
        return [(n, run.value(handoff_name(n), field, aggregate)) for n in ns]

    return {
        "name": "hand-off-stall",
        "title": "Hand-off under traffic: stall against N connections (ms, median of 5 runs)",
        "xlabel": "N connections", "ylabel": "ms", "log": ["x", "y"],
        "series": [{"title": "max stall (median run)", "points": points("stall_max_ms")},
                   {"title": "max stall (worst run)", "points": points("stall_max_ms", "max")},
                   {"title": "p99 stall", "points": points("stall_p99_ms")},
                   {"title": "pause", "points": points("pause_ms")},
                   {"title": "max latency outside the hand-off", "points": points("outside_max_ms")},
                   {"title": f"goal at {HANDOFF_GOAL_CLIENTS:,}: {HANDOFF_STALL_GOAL_MS:.0f} ms",
                    "hline": HANDOFF_STALL_GOAL_MS}],
    }


# The plots, in order: each is a function of the run that returns a scripts/plot spec with a "name" (the file's stem).
PLOTS = (
    event_cost_plot,
    restore_cost_plot,
    handoff_stall_plot,
)


def draw_plots(run, plots_dir):
    """Draws every plot into plots_dir: [(spec, path or None, why not drawn)]."""
    os.makedirs(plots_dir, exist_ok=True)
    drawn = []
    for plot_of in PLOTS:
        spec = plot_of(run)
        path = os.path.join(plots_dir, spec["name"] + ".svg")
        spec["output"] = path
        done = subprocess.run([sys.executable, PLOT_TOOL, "-"], input=json.dumps(spec), text=True,
                              capture_output=True)
        if done.returncode == 0:
            drawn.append((spec, path, ""))
        else:  # an SVG left from an earlier run would not show this one's figures
            if os.path.exists(path):
                os.remove(path)
            drawn.append((spec, None, done.stderr.strip() or f"scripts/plot exited with {done.returncode}"))
    return drawn


def plots_section(drawn, out_dir):
    """Links to the plots, or why each is missing: Markdown lines."""
    out = ["## Plots\n",
           "Drawn with gnuplot (`scripts/plot`) from this run's JSON: the CPU-clock medians of the sections below, "
           "both axes logarithmic. A point the run does not have is left out, not interpolated.\n"]
    for spec, path, why in drawn:
        if path is None:
            out.append(f"- {spec['title']}: not drawn ({why}).\n")
        else:
            link = os.path.relpath(path, out_dir).replace(os.sep, "/")
            out.append(f"![{spec['title']}]({link})\n")
    return out


# ---- goals ----------------------------------------------------------------------------------------------------------

def memory_goals(run):
    """Goal (e), which has no clock: [(label, threshold, measured, ok or None)]."""
    mem = run.value(MEMORY_NAME, "bytes_per_entry")
    return [("(e) memory per entry ≤ 128 bytes", "≤ 128", "—" if mem is None else f"{mem:.1f} bytes",
             None if mem is None else mem <= 128)]


# The goals, in the table's order: (function, whether it takes a clock). A clocked function is called once per clock
# as f(run, clock); one without a clock as f(run). Each returns [(label, threshold, measured, ok or None)].
GOALS = (
    (goals_on, True),
    (memory_goals, False),
    (checkpoint_goals_on, True),
    (image_goals_on, True),
    (image_memory_goals, False),
    (restore_goals_on, True),
    (host_goals_on, True),
    (lambda run, clock: real_programs_goals_on(run.real, clock), True),
    (handoff_goals, False),
    (save_goals_on, True),
    (locks_held_goals, False),
    (buffered_goals_on, True),
    (tcp_by_value_goals, False),
)


def goals_section(run):
    """Every goal, met or not on each clock: Markdown lines."""
    rows = []
    for goals_of, clocked in GOALS:
        if clocked:
            by_clock = [goals_of(run, clock) for clock, _ in CLOCKS]
            for i, (label, threshold, _, _) in enumerate(by_clock[0]):
                row = [label, threshold]
                for goals in by_clock:
                    row += [goals[i][2], verdict(goals[i][3])]
                rows.append(row)
        else:
            for label, threshold, measured, ok in goals_of(run):
                rows.append([label + " (no clock)", threshold] + [measured, verdict(ok)] * len(CLOCKS))
    header = ["goal", "threshold"]
    for _, clock in CLOCKS:
        header += [f"measured, {clock}", f"verdict, {clock}"]
    return ["## Goals\n", table(header, rows) + "\n"]


def report(run, build_dir, command, drawn, out_dir):
    out = preamble(run, build_dir, command)
    out += plots_section(drawn, out_dir)
    for number, section in enumerate(SECTIONS, start=1):
        title, lines = section(run)
        out.append(f"## {number}. {title}\n")
        out += lines
    out += goals_section(run)
    if run.errors:
        out.append("## Errors in this run\n")
        out.append(table(["benchmark", "error"], sorted(run.errors.items())) + "\n")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="the run's JSON (--benchmark_format=json)")
    parser.add_argument("--build", required=True, help="the build directory the binary came from")
    parser.add_argument("--command", required=True, help="the command that produced the run, quoted in the report")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--plots", help="the folder the SVG plots go to (default: bench-plots beside --out)")
    parser.add_argument("--real-json", help="the run of bench/real_programs_bench (--benchmark_format=json); "
                        "without it the real programs are reported as not run")
    parser.add_argument("--real-command", help="the command that produced --real-json, quoted in the report")
    args = parser.parse_args()
    run = Run(args.json)
    run.real = Run(args.real_json) if args.real_json else None
    run.real_command = args.real_command or args.real_json
    if not run.aggregates:
        sys.exit(f"{args.json}: no aggregates (was the binary run with --benchmark_repetitions?)")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    drawn = draw_plots(run, args.plots or os.path.join(out_dir, "bench-plots"))
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(report(run, args.build, args.command, drawn, out_dir))


if __name__ == "__main__":
    main()
