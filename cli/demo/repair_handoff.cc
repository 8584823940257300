#include "demo/repair_handoff.h"

#include <thread>

#include "image/file.h"
#include "restore/resolvers.h"
#include "restore/tcp_image.h"

namespace epollcr::cli {

Status SaveByValueAndClose(World& world, const std::string& path, std::chrono::milliseconds hold, RepairSave* out) {
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
  std::this_thread::sleep_until(captured + hold);
  saver.CloseAll();
  out->image_bytes = bytes.value().size();
  out->save = saved - captured;
  out->write = wrote - saved;
  out->hold = Clock::now() - captured;
  return {};
}

Status RestoreByValue(const std::string& path, World* world, restore::Report* report) {
  restore::TcpResolver tcp;
  restore::InheritedFdResolver inherited;
  restore::Options options;
  options.resolvers = {&tcp, &inherited};
  return restore::RestoreFile(path, world, options, report);
}

}  // namespace epollcr::cli
