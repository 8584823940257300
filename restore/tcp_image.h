// TCP sockets by value in an image (issue 18; docs/restore.md, "TCP connections by value"): the save option that
// records each host TCP socket as a TcpConnectionState or TcpListenerState (image.proto) instead of a reference, and
// the resolver that rebuilds them in a process that inherited no fd. restore/tcp_repair.h does the work on each
// socket; this file puts it in the image's save and the restorer's resolve stage.
//
// A move by value:
//   old process   TcpByValue::Save(world) -> image bytes (every TCP connection now in repair mode, holding what it
//                 receives, and the network lock installed: restore/network_lock.h); write them where the new process
//                 finds them; then either CloseAll() (the move goes ahead: connections close in repair mode, so the
//                 peer gets no FIN or RST; the lock stays and drops the peers' segments meanwhile) or Resume()
//                 (called off: the sockets carry on and the lock goes)
//   new process   Restore(image, &world, {.resolvers = {&tcp_resolver, ...}}): each socket rebuilt at its recorded
//                 fd number, under its registrations, then the lock removed; on failure nothing is left, the lock
//                 removed too (TcpResolver::Finished)
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "epollcr/host_file.h"
#include "epollcr/state.h"
#include "epollcr/v1/image.pb.h"
#include "image/codec.h"
#include "restore/restorer.h"
#include "restore/tcp_repair.h"

namespace epollcr::restore {

// The records of a capture, and the capture back from a record (validated: image/tcp_records.h).
void ToRecord(const TcpConnection& c, int fd, v1::TcpConnectionState* out);
void ToRecord(const TcpListener& l, int fd, v1::TcpListenerState* out);
TcpConnection FromRecord(const v1::TcpConnectionState& record);
TcpListener FromRecord(const v1::TcpListenerState& record);

struct TcpByValueOptions {
  // A socket it cannot capture stays a HostFileReference (by_reference() lists it with the reason) instead of
  // failing the save.
  bool fallback_to_reference = false;
  // Guards the moved sockets with a network lock from the save until the new process has rebuilt them
  // (restore/network_lock.h). Without it a segment from a peer between CloseAll and the rebuild meets a reset.
  bool lock_network = true;
};

// The save side. Records every host socket of a world by value: established TCP connections (IPv4, IPv6) with
// CaptureTcp, listening TCP sockets with CaptureListener. Host files that are not sockets stay references. A socket it
// cannot capture (no CAP_NET_ADMIN, no TCP_REPAIR in the kernel, a UDP or UNIX socket, a connection mid-handshake or
// mid-close, a listener with unaccepted connections) fails the save, naming its fd and why, unless
// `fallback_to_reference`. One save per object.
class TcpByValue {
 public:
  explicit TcpByValue(TcpByValueOptions options = {}) : options_(options) {}
  // A save neither closed nor resumed is resumed: the sockets carry on and no lock is left behind.
  ~TcpByValue();
  TcpByValue(const TcpByValue&) = delete;
  TcpByValue& operator=(const TcpByValue&) = delete;

  // image::SaveImage with host_by_value set on `options`. Once the cut is released it installs the network lock in
  // this thread's network namespace (if any socket moves by value) and records its name in the image
  // (Image.network_lock), then checks that no connection reached a moved listener's accept queue meanwhile (EBUSY: it
  // would be lost with the listener). On failure every socket captured so far is resumed (left as it was), the lock
  // is removed, and the error names the fd (or says why the lock could not be had: EPERM, EPROTONOSUPPORT). On
  // success the connections stay held in repair mode, sending nothing and dropping what they receive (the peer sends
  // it again), until CloseAll or Resume.
  Result<std::string> Save(const World& world, image::SaveOptions options = {});

  // The move goes ahead: each socket recorded by value is given up by its host file (HostFile::ReleaseFd) and closed,
  // connections in repair mode. The world's entries on them stay until the world goes. The network lock stays: the
  // restore removes it.
  void CloseAll();
  // The move is called off: the connections leave repair mode and carry on, and the network lock goes. The first
  // error, if any (each step is tried).
  std::error_code Resume();

  struct Fallback {
    int fd = -1;
    std::string reason;
  };
  // Sockets left by reference (with fallback_to_reference), in save order.
  const std::vector<Fallback>& by_reference() const { return by_reference_; }
  // How many sockets the image holds by value.
  std::size_t connections() const { return connections_.size(); }
  std::size_t listeners() const { return listeners_.size(); }
  // The network lock the last Save installed ("" if none): its nftables table.
  const std::string& network_lock() const { return lock_; }

 private:
  // SaveOptions::host_by_value. Preconditions: the save's cut is held.
  Result<bool> Record(HostFile& file, v1::File* out);
  // SaveOptions::after_capture: the lock, then the listeners' accept queues.
  Status Lock(v1::Image& image);

  const TcpByValueOptions options_;
  const DropFilter* filter_ = nullptr;  // during Save
  struct Held {
    std::shared_ptr<HostFile> file;
    TcpConnection captured;  // for ResumeTcp (its SO_REUSEADDR) and the lock (its addresses); no queues
  };
  struct HeldListener {
    std::shared_ptr<HostFile> file;
    TcpListener captured;
  };
  std::vector<Held> connections_;  // in repair mode from the save to CloseAll or Resume
  std::vector<HeldListener> listeners_;
  std::vector<Fallback> by_reference_;
  std::string lock_;          // the lock Save installed; after CloseAll only its name
  bool lock_owned_ = false;   // installed by Save and not yet given to the restore by CloseAll: Resume removes it
  bool pending_ = false;      // a save succeeded and neither CloseAll nor Resume followed
};

// The restore side: a resolver for TCP records. Prepare rebuilds every record of the image, listeners first (a
// listener bound on the port of a rebuilt connection is refused unless both have SO_REUSEADDR, while a connection
// rebuilt in repair mode may always share its listener's port), each at its recorded fd number (which must be free in
// this process; close-on-exec); Resolve hands each out as a new HostFile. A record whose rebuild failed is unresolved
// with the connection's addresses, its fd and the failing step. When the restore fails (Finished(false)), every
// socket it made is closed, connections in repair mode, so the peer hears nothing and no fd is left.
//
// Finished removes the image's network lock from this thread's network namespace: after a restore that succeeded
// (the rebuilt sockets hold the connections from then on), and after one that failed, once the sockets it made are
// closed. A lock that is not in this namespace (the old process ran in another, the move went to another
// machine) is left to whoever runs that namespace: network_lock_elsewhere() says so. One restore per object.
class TcpResolver : public Resolver {
 public:
  TcpResolver() = default;
  ~TcpResolver() override;
  TcpResolver(const TcpResolver&) = delete;
  TcpResolver& operator=(const TcpResolver&) = delete;

  void Prepare(std::span<const FileReference> refs) override;
  Resolution Resolve(const FileReference& ref) override;
  void Finished(bool restored) override;

  // The image's lock, and whether this resolver found it absent here (so another namespace holds it).
  const std::string& network_lock() const { return lock_; }
  bool network_lock_elsewhere() const { return lock_elsewhere_; }
  // The first error of removing the lock (other than its absence), if any.
  const Status& unlock_error() const { return unlock_error_; }

 private:
  struct Made {
    int fd = -1;  // -1: the rebuild failed (`error`)
    bool connection = false;
    bool handed_out = false;
    std::string error;
  };
  void Rebuild(const FileReference& ref);
  void CloseMade(bool all);
  void Unlock();

  std::map<std::uint64_t, Made> made_;  // by object id
  TcpDefaults defaults_;      // what a new socket here has, read by the first rebuild
  std::vector<int> plugs_;    // during Prepare: free numbers below the sockets' own, kept taken (PlaceAt)
  std::string lock_;          // the image's network lock, "" if none or once removed
  bool lock_elsewhere_ = false;
  Status unlock_error_;
};

}  // namespace epollcr::restore
