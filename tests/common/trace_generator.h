// Random replay traces for differential testing (kernel vs userspace engine).
//
// The generator writes trace text (docs/trace-format.md) that always parses: names are defined before use and never
// redefined while live. It leans towards interesting interactions: few names, so the same files are registered,
// written, read, shut down and closed many times; registrations of epolls in epolls; flags (et, oneshot, exclusive),
// rare and unknown event bits; eventfd values at the counter's limits; pipe writes around the page and buffer sizes;
// uses of dead names and of the wrong kind of fd. Every wait has timeout 0, so a trace never blocks. With
// GeneratorOptions::kernel_only_kinds, timerfds, signalfds, UDP pairs and FIFOs join in.
//
// The same seed gives the same trace on every platform (own PRNG and own integer mapping, no <random> distributions).
#pragma once

#include <cstdint>
#include <string>

namespace epollcr::replay {

struct GeneratorOptions {
  int ops = 50;                  // operation lines per trace
  bool nested_epolls = true;     // allow `add E E2` with E2 an epoll
  bool exclusive = true;         // use the exclusive flag in add/mod
  int checkpoint_percent = 0;    // chance, per line, of a `checkpoint` line
  // Also the kernel-only kinds (docs/trace-format.md), in their deterministic uses only: timerfds that expire at once
  // (`settime T 1 abs`), are disarmed or are set far off; signalfds and `raise`; UDP pairs (never written towards a
  // closed end: the ICMP error that brings back is rate-limited by the kernel); FIFOs. No TCP. Such a trace is not
  // checkpointed by replay yet: run it straight (--files memory or host).
  bool kernel_only_kinds = false;
};

std::string GenerateTrace(std::uint64_t seed, const GeneratorOptions& options = {});

}  // namespace epollcr::replay
