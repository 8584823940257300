#include "epollcr/file.h"

#include "event_poll_internal.h"

namespace epollcr {

Result<std::size_t> File::Read(std::span<std::byte>) { return Errno(EINVAL); }
Result<std::size_t> File::Write(std::span<const std::byte>) { return Errno(EINVAL); }
std::error_code File::Shutdown(int) { return Errno(ENOTSOCK); }

void File::ReleaseFromPolls() { ReleaseFileFromPolls(*this); }

}  // namespace epollcr
