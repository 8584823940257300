// The format-neutral public parts of the state model: policy names and the registry of embedder file types.
#include <map>
#include <string>

#include "epollcr/mutex.h"
#include "epollcr/state.h"
#include "state/load_objects.h"

namespace epollcr {

const char* FieldPolicyName(FieldPolicy policy) {
  switch (policy) {
    case FieldPolicy::kSave: return "save";
    case FieldPolicy::kNoSave: return "nosave";
    case FieldPolicy::kZeroValue: return "zerovalue";
    case FieldPolicy::kWait: return "wait";
    case FieldPolicy::kManual: return "manual";
  }
  return "?";
}

namespace {
// A leaf outside the engine's lock order (LOCKING, event_poll_internal.h).
Mutex& RegistryMutex() {
  static Mutex mu;
  return mu;
}
std::map<std::string, FileFactory>& Registry() EPOLLCR_REQUIRES(RegistryMutex()) {
  static std::map<std::string, FileFactory> registry;
  return registry;
}
}  // namespace

std::error_code RegisterFileType(std::string kind, FileFactory factory) {
  if (kind.empty() || !factory || state::BuiltInFileKind(kind)) return Errno(EINVAL);
  MutexLock lock(RegistryMutex());
  if (!Registry().emplace(std::move(kind), std::move(factory)).second) return Errno(EEXIST);
  return {};
}

FileFactory state::FindFileType(const std::string& kind) {
  MutexLock lock(RegistryMutex());
  auto it = Registry().find(kind);
  return it == Registry().end() ? FileFactory{} : it->second;
}

}  // namespace epollcr
