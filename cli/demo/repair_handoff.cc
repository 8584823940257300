#include "demo/repair_handoff.h"

#include <cerrno>

#include "image/file.h"
#include "restore/resolvers.h"
#include "restore/tcp_image.h"

namespace epollcr::cli {

Status SaveByValueAndClose(World& world, const std::string& path, RepairSave* out) {
  using Clock = std::chrono::steady_clock;
  const auto captured = Clock::now();
  restore::TcpByValue saver;
  Result<std::string> bytes = saver.Save(world);
  if (!bytes.ok()) return bytes.status();
  const auto saved = Clock::now();
  const Status written = image::WriteImageFile(path, std::string_view(bytes.value()).substr(image::kHeaderSize));
  if (!written.ok()) {
    (void)saver.Resume();
    return {written.code, written.message};
  }
  const auto wrote = Clock::now();
  out->connections = saver.connections();
  out->listeners = saver.listeners();
  out->lock = saver.network_lock();
  saver.CloseAll();
  out->image_bytes = bytes.value().size();
  out->save = saved - captured;
  out->write = wrote - saved;
  out->hold = Clock::now() - captured;
  return {};
}

Status RestoreByValue(const std::string& path, World* world, restore::Report* report, std::string* lock) {
  restore::TcpResolver tcp;
  restore::InheritedFdResolver inherited;
  restore::Options options;
  options.resolvers = {&tcp, &inherited};
  Status s = restore::RestoreFile(path, world, options, report);
  *lock = tcp.network_lock();
  if (!s.ok()) return s;
  if (!tcp.unlock_error().ok()) return tcp.unlock_error();
  if (tcp.network_lock_elsewhere()) {
    return Status::Error(ENOENT, "network lock " + tcp.network_lock() + ": not in this network namespace");
  }
  return {};
}

}  // namespace epollcr::cli
