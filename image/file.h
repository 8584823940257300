// The image file format: a fixed 32-byte header that frames an opaque payload (the serialized epollcr.v1 protobuf),
// and the atomic, durable writing and bounded reading of image files. docs/image-format.md, "Framing" and "Writing
// and reading files", is the specification; this header follows it.
//
// Nothing here throws or logs. Every failure is a Status (epollcr/result.h): a std::error_code (an ImageErrc of ImageCategory()
// for format errors, a Linux errno in std::generic_category() for system-call failures) and a message that says what
// and where ("write /x/.img.tmp.12.9f3a: No space left on device").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "epollcr/result.h"

namespace epollcr {
class BigBuffer;
}

namespace epollcr::image {

// --- Framing ---------------------------------------------------------------------------------------------------------
//
// offset size  field
//  0      8    magic "EPCRIMG\0" (45 50 43 52 49 4d 47 00)
//  8      2    format major, u16 little-endian (this build writes 1, reads 1)
// 10      2    format minor, u16 little-endian (this build writes 0, reads any)
// 12      4    flags, u32 little-endian (1.0 writes 0; bits 0-15 must be understood, bits 16-31 may be ignored)
// 16      8    payload length in bytes, u64 little-endian
// 24      4    CRC32C of the payload, u32 little-endian
// 28      4    CRC32C of header bytes 0..27, u32 little-endian
// 32      N    payload; the file ends exactly after it

inline constexpr std::string_view kMagic{"EPCRIMG\0", 8};
inline constexpr std::size_t kHeaderSize = 32;
inline constexpr std::uint16_t kFormatMajor = 1;
inline constexpr std::uint16_t kFormatMinor = 0;
inline constexpr std::uint32_t kRequiredFlagsMask = 0x0000ffff;  // flags a reader must understand (none in 1.x yet)

// Format errors. Each also compares equal to a generic errno condition (listed) so callers that only care about the
// class of failure can test `error.code == std::errc::bad_message`.
enum class ImageErrc {
  kBadMagic = 1,        // EILSEQ        not an epollcr image at all
  kUnsupportedVersion,  // ENOTSUP       a major version this build does not read
  kUnsupportedFlags,    // ENOTSUP       a required flag this build does not understand
  kTooLarge,            // EFBIG         payload (or file) beyond ReadLimits::max_payload
  kTruncated,           // EBADMSG       fewer bytes than the header says
  kTrailingBytes,       // EBADMSG       more bytes than the header says
  kHeaderChecksum,      // EBADMSG       header bytes 0..27 do not match their CRC32C
  kPayloadChecksum,     // EBADMSG       payload does not match its CRC32C
  kEmptyFile,           // EBADMSG       a zero-byte file (ReadImageFile)
  kNotRegularFile,      // EINVAL        a directory, FIFO, device or socket (ReadImageFile)
};
const std::error_category& ImageCategory();
std::error_code make_error_code(ImageErrc e);  // found by ADL; makes ImageErrc usable where a std::error_code is

struct ReadLimits {
  std::uint64_t max_payload = std::uint64_t{1} << 30;  // 1 GiB
};

// CRC32C (Castagnoli, reflected, init and final xor 0xffffffff), as used by iSCSI, ext4 and SSE4.2's crc32.
// Crc32c("123456789") == 0xe3069283.
std::uint32_t Crc32c(std::string_view bytes);

// The header followed by the payload.
std::string Frame(std::string_view payload);

// Just the header for `payload` (what Frame puts first), for writers that send the payload from where it lies.
using FrameHeaderBytes = std::array<char, kHeaderSize>;
FrameHeaderBytes FrameHeader(std::string_view payload);

// A view of the payload inside `file_bytes` (valid as long as they are), or the error. Checks `file_bytes` in this order and stops at the first failure: magic, major version, header checksum, required
// flags, length against limits, length against the bytes present (truncated / trailing), payload checksum.
// Allocates nothing: the claimed length is only compared, never used to size anything.
Result<std::string_view> Unframe(std::string_view file_bytes, const ReadLimits& limits = {});

// --- Files -----------------------------------------------------------------------------------------------------------

// Each system call of the file functions is a point of the fault-injection seam (lib/src/fault_injection.h:
// kImageOpenDirectory ... kImageUnlink), where tests fail it or shorten it.

// Frames `payload` and replaces the file at `path` with it, atomically and durably:
//   open the directory of `path`; create `.NAME.tmp.PID.RANDOM` beside it (O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC, mode
//   0600 before the umask); write all (short writes and EINTR continue); fsync; close; rename over `path`; fsync the
//   directory; close it.
// A failure before the rename leaves `path` as it was and removes the temporary file. The directory fsync is the
// only step after the rename: if it fails, `path` holds the complete new image (in the page cache) but a power
// loss could still bring back the old one; the error says so. A crash (the process dies) at any step leaves `path`
// as the complete old or the complete new image, and possibly a temporary file that readers never look at
// (CleanStaleTemporaries removes it).
Status WriteImageFile(const std::string& path, std::string_view payload);

// Reads the image at `path`: open (O_RDONLY|O_CLOEXEC|O_NONBLOCK, so a FIFO cannot block us), fstat — a non-regular
// file, an empty file or one larger than limits.max_payload + kHeaderSize is rejected before anything is read —
// read all, Unframe, and move the payload into *payload_out. On failure *payload_out is untouched.
Status ReadImageFile(const std::string& path, std::string* payload_out, const ReadLimits& limits = {});
// The same into a BigBuffer (lib/src/big_buffer.h: huge pages for a large file), without moving the payload:
// *file_bytes_out holds the whole file and *payload_out views its payload. On failure both are untouched.
Status ReadImageFileBytes(const std::string& path, BigBuffer* file_bytes_out, std::string_view* payload_out,
                              const ReadLimits& limits = {});

// The name WriteImageFile gives its temporary files for `path`, without the directory and without the final
// ".PID.RANDOM": ".NAME.tmp" (NAME cut to 200 bytes so the whole stays under NAME_MAX).
std::string TemporaryPrefix(const std::string& path);

// Removes the temporary files that WriteImageFile left beside `path` when its process died: those named
// TemporaryPrefix(path) + ".PID.RANDOM" whose PID is no longer a live process (kill(PID, 0) fails with ESRCH), so a
// write in progress in another live process of the same PID namespace is never disturbed. *removed (if given)
// counts the files removed. Uses the real system calls.
Status CleanStaleTemporaries(const std::string& path, std::size_t* removed = nullptr);

}  // namespace epollcr::image

template <>
struct std::is_error_code_enum<epollcr::image::ImageErrc> : std::true_type {};
