// The public face of the Boost backend: format names, the standalone archive envelope (SaveWorld, LoadWorld), and the
// entry points for embedders' own Boost archives (epollcr/boost_world.h).
#include <cstring>
#include <sstream>
#include <type_traits>

#include "epollcr/boost_world.h"
#include "epollcr/crc32c.h"
#include "epollcr/mutex.h"
#include "archive/bounded_archives.h"
#include "archive/direct_oarchives.h"
#include "archive/world_archive.h"
#include "state/visitors.h"

namespace epollcr {

const char* ArchiveFormatName(ArchiveFormat format) {
  switch (format) {
    case ArchiveFormat::kBoostText: return "boost-text";
    case ArchiveFormat::kBoostXml: return "boost-xml";
    case ArchiveFormat::kBoostBinary: return "boost-binary";
  }
  return "?";
}

Result<ArchiveFormat> ParseArchiveFormat(std::string_view name) {
  for (ArchiveFormat f : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    if (name == ArchiveFormatName(f)) return f;
  }
  return Errno(EINVAL);
}

// ---- the envelope -------------------------------------------------------------------------------------------------
//
// offset size
//   0     8   magic "EPCRWRLD"
//   8     1   envelope version (1)
//   9     1   archive format (0 text, 1 xml, 2 binary)
//   10    2   reserved, zero
//   12    4   CRC32C of the archive bytes, little-endian
//   16    8   length of the archive bytes, little-endian
//   24    -   the Boost archive

namespace {

constexpr char kMagic[8] = {'E', 'P', 'C', 'R', 'W', 'R', 'L', 'D'};
constexpr std::uint8_t kEnvelopeVersion = 1;
constexpr std::size_t kHeaderSize = 24;

void PutLe(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t GetLe(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}

// The envelope's header, then the archive, in one string: the archive is written after room left for the header,
// which is filled in at the end (no second copy of the archive).
// Room reserved for an archive per fd of the world: more than a binary archive of the benchmarks' worlds takes per fd
// (an entry per fd; BENCHMARKS.md "Checkpoint save and load"). Pages of it that are never written cost nothing.
constexpr std::size_t kReservedBytesPerFd = 32;

template <typename Oar>
Status SaveAs(const World& world, std::string* enveloped, SavePause* pause) {
  // The stream writes into a string reserved for the archive's likely size (libstdc++'s stringbuf writes into its
  // string's whole capacity): grown by doubling from empty, a large archive was copied about once more, into fresh
  // memory each time.
  std::string reserved;
  reserved.reserve(kHeaderSize + kReservedBytesPerFd * static_cast<std::size_t>(world.fds.Count()));
  std::ostringstream os(std::move(reserved), std::ios::binary);
  const char room[kHeaderSize] = {};
  os.write(room, static_cast<std::streamsize>(sizeof room));
  Status s;
  {
    Oar ar(os);
    s = archive::SaveWorldTo(ar, world, pause);
  }  // an xml archive closes its root element in its destructor
  *enveloped = std::move(os).str();
  return s;
}

// An xml archive's destructor reads the closing tag, and throws (from a destructor: std::terminate) if the stream
// ends before a '>'. So before it runs: after a failed load the stream is failed (the destructor then reads nothing);
// after a load that succeeded, a rest without a '>' is a truncated archive, refused like any other.
// Found by tests/fuzz (boost_xml_loader); the regression input is tests/fuzz/regressions/boost_xml_loader/.
template <typename Iar>
Status EndArchive(std::istream& is, std::string_view rest, Status loaded, World* out) {
  if constexpr (std::is_same_v<Iar, archive::BoundedXmlIArchive>) {
    if (loaded.ok() && rest.find('>') == std::string_view::npos) {
      out->roots.clear();
      out->fds.Clear();
      loaded = Status::Error(EINVAL, "load: the xml archive ends without its closing tag (truncated?)");
    }
    if (!loaded.ok()) is.setstate(std::ios::failbit);
  }
  return loaded;
}

template <typename Iar>
Status LoadAs(std::string_view payload, World* out) {
  try {
    archive::ViewBuffer buffer(payload);
    std::istream is(&buffer);
    Iar ar(is);
    Status loaded = archive::LoadWorldFrom(ar, out);
    return EndArchive<Iar>(is, buffer.Rest(), std::move(loaded), out);
  } catch (const std::exception& e) {  // the archive's own header was unreadable
    return Status::Error(EINVAL, std::string("load: ") + e.what());
  }
}

}  // namespace

Result<std::string> SaveWorld(const World& world, ArchiveFormat format, SavePause* pause) {
  std::string out;
  Status s;
  switch (format) {
    case ArchiveFormat::kBoostText: s = SaveAs<archive::DirectTextOArchive>(world, &out, pause); break;
    case ArchiveFormat::kBoostXml: s = SaveAs<archive::DirectXmlOArchive>(world, &out, pause); break;
    case ArchiveFormat::kBoostBinary: s = SaveAs<boost::archive::binary_oarchive>(world, &out, pause); break;
    default: return Status::Error(EINVAL, "save: unknown archive format");
  }
  if (!s.ok()) return s;
  const std::string_view payload = std::string_view(out).substr(kHeaderSize);
  std::string header(kMagic, sizeof kMagic);
  header.push_back(static_cast<char>(kEnvelopeVersion));
  header.push_back(static_cast<char>(format));
  PutLe(header, 0, 2);
  PutLe(header, Crc32c(payload), 4);
  PutLe(header, payload.size(), 8);
  out.replace(0, kHeaderSize, header);
  return out;
}

Status LoadWorld(std::string_view bytes, World* out) {
  if (bytes.size() < kHeaderSize) {
    return Status::Error(EINVAL, "load: " + std::to_string(bytes.size()) + " bytes is too short for an archive");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return Status::Error(EINVAL, "load: not an epollcr archive (bad magic)");
  const auto version = static_cast<std::uint8_t>(bytes[8]);
  if (version != kEnvelopeVersion) {
    return Status::Error(EINVAL, "load: envelope version " + std::to_string(version) + " (this build reads 1)");
  }
  const auto format = static_cast<std::uint8_t>(bytes[9]);
  if (format > static_cast<std::uint8_t>(ArchiveFormat::kBoostBinary) || GetLe(bytes, 10, 2) != 0) {
    return Status::Error(EINVAL, "load: unknown archive format " + std::to_string(format));
  }
  const std::uint64_t length = GetLe(bytes, 16, 8);
  if (length != bytes.size() - kHeaderSize) {
    return Status::Error(EINVAL, "load: the archive is " + std::to_string(bytes.size() - kHeaderSize) +
                                     " bytes, its header says " + std::to_string(length) + " (truncated?)");
  }
  const std::string_view payload = bytes.substr(kHeaderSize);
  if (Crc32c(payload) != GetLe(bytes, 12, 4)) return Status::Error(EINVAL, "load: checksum mismatch (corrupted archive)");
  // Boost's archives with the loads that trust declared lengths and counts bounded (archive/bounded_archives.h).
  switch (static_cast<ArchiveFormat>(format)) {
    case ArchiveFormat::kBoostText: return LoadAs<archive::BoundedTextIArchive>(payload, out);
    case ArchiveFormat::kBoostXml: return LoadAs<archive::BoundedXmlIArchive>(payload, out);
    case ArchiveFormat::kBoostBinary: return LoadAs<archive::BoundedBinaryIArchive>(payload, out);
  }
  return Status::Error(EINVAL, "load: unknown archive format");
}

// ---- embedders' own archives --------------------------------------------------------------------------------------

namespace {
template <typename Ar>
void SaveOrThrow(Ar& ar, const World& world) {
  if (Status s = archive::SaveWorldTo(ar, world); !s.ok()) throw CheckpointError(s);
}
template <typename Ar>
void LoadOrThrow(Ar& ar, World& world) {
  if (Status s = archive::LoadWorldFrom(ar, &world); !s.ok()) throw CheckpointError(s);
}
}  // namespace

void SaveWorldToArchive(boost::archive::text_oarchive& ar, const World& w) { SaveOrThrow(ar, w); }
void SaveWorldToArchive(boost::archive::xml_oarchive& ar, const World& w) { SaveOrThrow(ar, w); }
void SaveWorldToArchive(boost::archive::binary_oarchive& ar, const World& w) { SaveOrThrow(ar, w); }
void LoadWorldFromArchive(boost::archive::text_iarchive& ar, World& w) { LoadOrThrow(ar, w); }
void LoadWorldFromArchive(boost::archive::xml_iarchive& ar, World& w) { LoadOrThrow(ar, w); }
void LoadWorldFromArchive(boost::archive::binary_iarchive& ar, World& w) { LoadOrThrow(ar, w); }

}  // namespace epollcr
