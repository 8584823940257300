// Written by hand rather than through a JSON library: the document's layout (which arrays stay on one line) is part
// of its output, and the only JSON writer among the dependencies, protobuf's, writes messages, not this shape.
#include "commands/ps_json.h"

#include <cstdio>
#include <sstream>
#include <string_view>

#include "commands/image_text.h"
#include "commands/ps_text.h"
#include "image/codec.h"

namespace epollcr::cli {
namespace {

using ps::Entry;
using ps::OpenFile;
using ps::Snapshot;

// A JSON string: quotes, backslashes and control characters escaped, other bytes as they are.
std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) {
      out += c;  // other bytes as they are: paths are bytes, and JSON is UTF-8
      continue;
    }
    char esc[8];
    std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(c));
    out += esc;
  }
  return out + "\"";
}

std::string JsonFds(const Snapshot& s, const OpenFile* f) {
  std::string out = "[";
  for (std::size_t k = 0; f && k < f->fds.size(); ++k) out += (k > 0 ? ", " : "") + std::to_string(s.fds[f->fds[k]].fd);
  return out + "]";
}

void JsonEntry(const Snapshot& s, const Entry& e, std::ostream& out) {
  const OpenFile* file = e.target.file ? &s.files[*e.target.file] : nullptr;
  out << "        {\n"
      << "          \"tfd\": " << e.line.tfd << ",\n"
      << "          \"events\": " << JsonString(ps::EventsText(e.line.events)) << ",\n"
      << "          \"events_word\": " << JsonString(HexText(e.line.events)) << ",\n"
      << "          \"data\": " << JsonString(HexText(e.line.data)) << ",\n"
      << "          \"list\": " << JsonString(ps::ListWord(e.line.events)) << ",\n"
      << "          \"target\": {\n"
      << "            \"state\": " << JsonString(ps::StateWord(e.target.state)) << ",\n"
      << "            \"fds\": " << JsonFds(s, file) << ",\n";
  if (file) out << "            \"link\": " << JsonString(s.FirstFd(*file).link) << ",\n";
  out << "            \"epoll\": " << (file && s.FirstFd(*file).epoll ? "true" : "false") << ",\n"
      << "            \"ino\": " << e.line.ino << ",\n"
      << "            \"dev\": " << JsonString(ps::DevText(e.line.sdev)) << ",\n"
      << "            \"pos\": " << e.line.pos << "\n"
      << "          }\n"
      << "        }";
}

}  // namespace

std::string PsJson(const Snapshot& s, const ps::Interposed* interposed) {
  std::ostringstream out;
  out << "{\n"
      << "  \"pid\": " << s.pid << ",\n"
      << "  \"command\": " << JsonString(s.command) << ",\n"
      << "  \"kcmp\": " << (s.kcmp ? "true" : "false") << ",\n";
  if (!s.kcmp) out << "  \"kcmp_unavailable\": " << JsonString(s.kcmp_unavailable) << ",\n";
  out << "  \"epolls\": [";
  bool first_poll = true;
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    if (!s.IsEpoll(f)) continue;
    const OpenFile& file = s.files[f];
    out << (first_poll ? "\n" : ",\n") << "    {\n"
        << "      \"fds\": " << JsonFds(s, &file) << ",\n"
        << "      \"watched_by\": [";
    first_poll = false;
    const auto watchers = ps::Watchers(s, f);
    for (std::size_t k = 0; k < watchers.size(); ++k) {
      out << (k > 0 ? ", " : "") << "{\"epoll_fd\": " << s.FirstFd(s.files[watchers[k].first]).fd
          << ", \"tfd\": " << watchers[k].second->line.tfd << "}";
    }
    out << "],\n      \"entries\": [";
    for (std::size_t k = 0; k < file.entries.size(); ++k) {
      out << (k > 0 ? ",\n" : "\n");
      JsonEntry(s, file.entries[k], out);
    }
    out << (file.entries.empty() ? "]\n" : "\n      ]\n") << "    }";
  }
  out << (first_poll ? "]" : "\n  ]");
  if (interposed != nullptr) {
    Result<std::string> image = image::ToJson(interposed->image);
    out << ",\n  \"epollcr\": {\"socket\": " << JsonString(interposed->socket)
        << ", \"image\": " << (image.ok() ? image.value() : "null") << "}";
  }
  out << "\n}\n";
  return out.str();
}

}  // namespace epollcr::cli
