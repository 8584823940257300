#include "state/load_objects.h"

#include "state/visitors.h"

namespace epollcr::state {

namespace {

constexpr std::pair<ObjectKind, const char*> kFileKinds[] = {
    {ObjectKind::kEventPoll, "eventpoll"},   {ObjectKind::kEventFd, "eventfd"},
    {ObjectKind::kPipeRead, "pipe-read"},    {ObjectKind::kPipeWrite, "pipe-write"},
    {ObjectKind::kUnixStream, "unix-stream"}, {ObjectKind::kHost, "host"},
};

}  // namespace

const char* ObjectKindName(ObjectKind kind) {
  switch (kind) {
    case ObjectKind::kPipe: return "pipe";
    case ObjectKind::kSocketPair: return "socket-pair";
    case ObjectKind::kEmbedder: return "embedder";
    default:
      for (const auto& [k, name] : kFileKinds) {
        if (k == kind) return name;
      }
  }
  return "object";
}

std::optional<ObjectKind> BuiltInFileKind(std::string_view name) {
  for (const auto& [kind, n] : kFileKinds) {
    if (name == n) return kind;
  }
  return std::nullopt;
}

bool IdIndex::Insert(std::uint64_t id, std::uint32_t position) {
  if (id == 0) return false;
  if (id < kDenseIds) {
    if (id >= dense_.size()) dense_.resize(std::max<std::size_t>(id + 1, dense_.size() * 2), kNone);
    if (dense_[id] != kNone) return false;
    dense_[id] = position;
    return true;
  }
  return sparse_.emplace(id, position).second;
}

std::uint32_t LoadObjects::Add(std::uint64_t id, ObjectKind kind, std::string_view custom_kind) {
  const auto position = static_cast<std::uint32_t>(ids.size());
  if (!index.Insert(id, position)) throw LoadError("object id " + std::to_string(id) + " is 0 or repeated");
  ids.push_back(id);
  kinds.push_back(kind);
  files.emplace_back();
  if (kind == ObjectKind::kEmbedder) custom_kinds.emplace(position, custom_kind);
  return position;
}

std::string LoadObjects::Name(std::uint32_t position) const {
  if (position >= ids.size()) return "object";
  const std::string kind =
      kinds[position] == ObjectKind::kEmbedder ? custom_kinds.at(position) : ObjectKindName(kinds[position]);
  return kind + "#" + std::to_string(ids[position]);
}

}  // namespace epollcr::state
