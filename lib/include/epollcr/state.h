// The state model: what of each savable type is saved, and how a saved world comes back.
//
// Every savable type declares its fields once, next to them, in a VisitState() member that lists each field with a
// policy (the Go seed's stateify tags):
//   kSave      saved and restored
//   kNoSave    not saved; default-constructed after load, then rebuilt by after_load
//   kZeroValue not saved; saving fails, naming the type and the field, unless it is zero/empty
//   kWait      saved as a reference to another object; the owner's after_load runs only after that object's
//   kManual    saved and loaded by the type's own hooks
// A snapshot is a consistent cut of a World (its fd table and named roots, every file they reach, every EventPoll):
// see docs/state-model.md for the locks that make it one.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <vector>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "epollcr/fd_table.h"
#include "epollcr/file.h"
#include "epollcr/result.h"

namespace epollcr {

enum class FieldPolicy : std::uint8_t { kSave, kNoSave, kZeroValue, kWait, kManual };

// Policy tags for VisitState declarations: v.Field("count", count_, kSave).
template <FieldPolicy P>
struct PolicyTag {
  static constexpr FieldPolicy policy = P;
};
inline constexpr PolicyTag<FieldPolicy::kSave> kSave{};
inline constexpr PolicyTag<FieldPolicy::kNoSave> kNoSave{};
inline constexpr PolicyTag<FieldPolicy::kZeroValue> kZeroValue{};
inline constexpr PolicyTag<FieldPolicy::kWait> kWait{};
inline constexpr PolicyTag<FieldPolicy::kManual> kManual{};

const char* FieldPolicyName(FieldPolicy policy);

// What a checkpoint holds: an fd table plus files the program keeps outside any fd table, by name. Files reached
// only through an EventPoll entry are not owned by the world and make the save fail (their owner is not saved).
struct World {
  FdTable fds;
  std::map<std::string, std::shared_ptr<File>> roots;
};

// Before a world's image is restored in this same process (a memory-mode checkpoint, replay's memory mode), the old
// world gives up what the restore takes over: every host file's fd (HostFile::ReleaseFd) and every poll's kernel epoll
// with its bell and private duplicates, without closing or changing any of them. The old world is then only fit to be
// dropped. Files reached through poll entries are walked too. Returns the kernel epolls, bells and private duplicates
// it gave up (not the host files' fds). Only fds given up so can be taken over by a restore in this process (one whose
// image records them, and that finds them as recorded); once the restore is done, CloseUnadopted closes the others.
std::vector<int> ReleaseHostResources(World& world);
// What ReleaseHostResources would give up (each kernel-active poll's kernel epoll, bell and private duplicates),
// without giving anything up: for a caller that lets them cross an exec and must keep its world working if the exec
// fails.
std::vector<int> KernelResources(World& world);
// Closes the fds of `released` that no restore took over.
void CloseUnadopted(const std::vector<int>& released);
// For a restore in a new process (an exec): the predecessor's ReleaseHostResources list, which crossed the exec
// (without FD_CLOEXEC) and reached this process through a channel it trusts (never the image: the image only names
// fds). Each fd that is open here is marked close-on-exec again and may be taken over as if this process had given
// it up; CloseUnadopted(fds) closes the rest once the restore is done. Returns the fds that were not open.
std::vector<int> AcceptInherited(const std::vector<int>& fds);
// The same for a live hand-off's successor (restore/successor.h), whose predecessor sent these fds itself with an
// image it took in the same consistent cut as it described them: a poll takes its kernel epoll over without reading
// its registrations back from /proc (which costs about a microsecond per registration), as long as every fd of the
// image is at the number the image gives it. The fds are marked close-on-exec if they are not already.
std::vector<int> AcceptHandedOver(const std::vector<int>& fds);

enum class ArchiveFormat : std::uint8_t { kBoostText, kBoostXml, kBoostBinary };
const char* ArchiveFormatName(ArchiveFormat format);
// "boost-text", "boost-xml", "boost-binary".
Result<ArchiveFormat> ParseArchiveFormat(std::string_view name);

// What a save cost the program's other threads: how long it held the consistent cut (docs/state-model.md, "A snapshot
// is a consistent cut"), from freezing the fd table to releasing the last lock. Meanwhile no thread can open, close,
// read or write a file of the world or use one of its polls. A protobuf image encodes after the cut (image/codec.h);
// a Boost archive is written inside it.
struct SavePause {
  std::chrono::nanoseconds locks_held{0};
};

// A whole world as a standalone Boost archive inside a small envelope (magic, format, length, CRC32C), so a
// truncated or corrupted archive is refused before Boost parses it. Boost archives are for trusted input, binary
// ones only on the same architecture and Boost version; the portable, validated format is the protobuf image.
// `pause`, if given, receives how long the save held the cut (set whenever the cut was taken).
Result<std::string> SaveWorld(const World& world, ArchiveFormat format, SavePause* pause = nullptr);
// Loads into `out`, which must be empty. On failure `out` is untouched and nothing stays registered anywhere.
Status LoadWorld(std::string_view bytes, World* out);

// Embedder file types: a File that can describe its state as bytes, and a factory registered under its kind name.
class SavableFile : public File {
 public:
  // The registered kind name, e.g. "myapp.timer".
  virtual std::string_view StateKind() const = 0;
  virtual Result<std::string> SaveState() const = 0;
};
using FileFactory = std::function<Result<std::shared_ptr<File>>(std::string_view state)>;
// EEXIST if the kind is taken; EINVAL for an empty kind or a built-in one.
std::error_code RegisterFileType(std::string kind, FileFactory factory);

}  // namespace epollcr
