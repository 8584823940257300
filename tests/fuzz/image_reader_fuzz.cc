// libFuzzer target for the image reader: any bytes go through unframe -> decode -> validate -> restore, and must
// either load a world or fail with an error; never crash, leak, hang, or leave a file behind.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "epollcr/epollcr.h"
#include "restore/image_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const long live = epollcr::File::LiveFiles();
  {
    epollcr::World world;
    epollcr::image::ReadLimits limits;
    limits.max_payload = 1 << 20;
    (void)epollcr::image::LoadImage(std::string_view(reinterpret_cast<const char*>(data), size), &world, limits);
    // Also the payload alone, without the framing, so the fuzzer reaches the decoder and validator directly.
    epollcr::StatusOr<epollcr::v1::Image> image =
        epollcr::image::Decode(std::string_view(reinterpret_cast<const char*>(data), size));
    if (image.ok()) {
      epollcr::World other;
      (void)epollcr::image::Restore(image.value, &other);
    }
  }
  if (epollcr::File::LiveFiles() != live) std::abort();  // a load, failed or not, left a file behind
  return 0;
}
