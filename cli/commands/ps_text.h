// The text of `epollcr ps` (docs/cli.md, "ps"), and the words it shares with the JSON document (ps_json.h).
#pragma once

#include <cstdint>
#include <string>

#include "commands/ps_interposed.h"
#include "commands/ps_proc.h"

namespace epollcr::cli {

// Each epoll of the process with its entries, in aligned columns, and which epolls watch it; then, for a program
// under `epollcr run`, its epollcr polls as the interposer holds them (`interposed`; the polls' kernel epolls are
// marked as theirs in the first part).
std::string PsText(const ps::Snapshot& snapshot, const ps::Interposed* interposed = nullptr);

namespace ps {

// The events word as inspect shows it: without the bits every armed entry carries.
std::string EventsText(std::uint32_t events);
// "armed" or "disabled".
std::string ListWord(std::uint32_t events);
// The kernel's dev_t of a fdinfo "sdev:" as major:minor.
std::string DevText(std::uint32_t sdev);
// "open", "unverified", "closed" or "reused".
const char* StateWord(TargetState state);

}  // namespace ps
}  // namespace epollcr::cli
