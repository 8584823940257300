// TCP sockets by value in an image (issue 18; docs/restore.md, "TCP connections by value"): the save option that
// records each host TCP socket as a TcpConnectionState or TcpListenerState (image.proto) instead of a reference, and
// the resolver that rebuilds them in a process that inherited no fd. restore/tcp_repair.h does the work on each
// socket; this file puts it in the image's save and the restorer's resolve stage.
//
// A move by value:
//   old process   TcpByValue::Save(world) -> image bytes (every TCP connection now in repair mode, holding what it
//                 receives); write them where the new process finds them; then either CloseAll() (the move goes
//                 ahead: connections close in repair mode, so the peer gets no FIN or RST) or Resume() (called off)
//   new process   Restore(image, &world, {.resolvers = {&tcp_resolver, ...}}): each socket rebuilt at its recorded
//                 fd number, under its registrations; on failure nothing is left (TcpResolver::Finished)
// Between CloseAll and the rebuild no socket holds the connections: docs/restore.md says what that gap risks.
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

// The save side. Records every host socket of a world by value: established TCP connections (IPv4, IPv6) with
// CaptureTcp, listening TCP sockets with CaptureListener. Host files that are not sockets stay references. A socket it
// cannot capture (no CAP_NET_ADMIN, no TCP_REPAIR in the kernel, a UDP or UNIX socket, a connection mid-handshake or
// mid-close, a listener with unaccepted connections) fails the save, naming its fd and why, unless
// `fallback_to_reference`: it then stays a HostFileReference and by_reference() lists it with the reason.
// One save per object.
class TcpByValue {
 public:
  explicit TcpByValue(bool fallback_to_reference = false) : fallback_(fallback_to_reference) {}
  ~TcpByValue() = default;
  TcpByValue(const TcpByValue&) = delete;
  TcpByValue& operator=(const TcpByValue&) = delete;

  // image::SaveImage with host_by_value set on `options`. On failure every socket captured so far is resumed (left
  // as it was) and the error names the fd. On success the connections stay held in repair mode, sending nothing and
  // dropping what they receive (the peer sends it again), until CloseAll or Resume.
  Result<std::string> Save(const World& world, image::SaveOptions options = {});

  // The move goes ahead: each socket recorded by value is given up by its host file (HostFile::ReleaseFd) and closed,
  // connections in repair mode. The world's entries on them stay until the world goes.
  void CloseAll();
  // The move is called off: the connections leave repair mode and carry on. The first error, if any (each is tried).
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

 private:
  // SaveOptions::host_by_value. Preconditions: the save's cut is held.
  Result<bool> Record(HostFile& file, v1::File* out);

  const bool fallback_;
  struct Held {
    std::shared_ptr<HostFile> file;
    TcpConnection captured;  // for ResumeTcp (its SO_REUSEADDR)
  };
  std::vector<Held> connections_;  // in repair mode from the save to CloseAll or Resume
  std::vector<std::shared_ptr<HostFile>> listeners_;
  std::vector<Fallback> by_reference_;
};

// The restore side: a resolver for TCP records. Prepare rebuilds every record of the image, listeners first (a
// listener bound on the port of a rebuilt connection is refused unless both have SO_REUSEADDR, while a connection
// rebuilt in repair mode may always share its listener's port), each at its recorded fd number (which must be free in this process; close-on-exec); Resolve hands each out as a new HostFile. A record
// whose rebuild failed is unresolved with the connection's addresses, its fd and the failing step. When the restore
// fails (Finished(false)), every socket it made is closed, connections in repair mode, so the peer hears nothing and
// no fd is left. One restore per object.
class TcpResolver : public Resolver {
 public:
  TcpResolver() = default;
  ~TcpResolver() override;
  TcpResolver(const TcpResolver&) = delete;
  TcpResolver& operator=(const TcpResolver&) = delete;

  void Prepare(std::span<const FileReference> refs) override;
  Resolution Resolve(const FileReference& ref) override;
  void Finished(bool restored) override;

 private:
  struct Made {
    int fd = -1;  // -1: the rebuild failed (`error`)
    bool connection = false;
    bool handed_out = false;
    std::string error;
  };
  void Rebuild(const FileReference& ref);
  void CloseMade(bool all);

  std::map<std::uint64_t, Made> made_;  // by object id
};

}  // namespace epollcr::restore
