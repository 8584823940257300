// The network lock of a move by value (docs/restore.md, "The network lock"): an nftables table that holds the peers'
// segments of the moved TCP connections off while no socket holds them, so that they meet no reset.
//
// From the old process's close to the new one's rebuild no socket holds a moved connection, and the kernel answers
// any segment for it with a reset (net/ipv4/tcp_ipv4.c, tcp_v4_send_reset for a segment that finds no socket). The
// lock drops those segments instead, before the stack sees them: the peer hears nothing and sends them again after
// its retransmission timeout, to the rebuilt socket. It also drops SYNs to the moved listeners' addresses (a client
// then retries its connect instead of being refused). Nothing else is touched: other connections, even on the same
// ports, flow on.
//
// The lock is a table of its own in family inet, named "epollcr_lock_" and a random nonce, with one base chain at the
// prerouting hook (priority -300, before connection tracking: a dropped segment leaves no state) and two sets of
// 4-tuples (IPv4 and IPv6; an IPv4-mapped IPv6 connection is IPv4 on the wire), so its cost per segment does not grow
// with the number of connections. It lives in the network namespace of the thread that installs it. Made through
// libnftables in one transaction: it is either wholly there or not at all. Needs CAP_NET_ADMIN in that namespace.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "epollcr/result.h"
#include "restore/tcp_repair.h"

namespace epollcr::restore {

// A fresh lock name: "epollcr_lock_" and 16 hex digits from getrandom(2).
std::string NewNetworkLockName();

// Installs the lock `table` in the calling thread's network namespace, dropping inbound segments of `connections`
// (remote -> local) and SYNs to `listeners`. On failure nothing is installed and the error says why: EPERM without
// CAP_NET_ADMIN, EPROTONOSUPPORT for a kernel without nf_tables, EEXIST for a table of that name already there.
Status LockNetwork(const std::string& table, std::span<const TcpConnection> connections,
                   std::span<const TcpListener> listeners);

// Removes the lock `table` from the calling thread's network namespace. ENOENT if it is not there.
Status UnlockNetwork(const std::string& table);

// The network locks in the calling thread's network namespace, by name (for tests and for clearing up after a crash).
Result<std::vector<std::string>> NetworkLocks();

}  // namespace epollcr::restore
