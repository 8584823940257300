// The image's string fields (image/utf8.h): epollcr's UTF-8 check agrees with protobuf's own (the oracle:
// protobuf parses a `string` field only if it is UTF-8), an image with a bad string is refused at every stage with
// the string's location, and protobuf never gets to log about it.
#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "epollcr/epollcr.h"
#include "image/codec.h"
#include "image/utf8.h"
#include "world_fixtures.h"

namespace epollcr::image {
namespace {

// Every line protobuf logs while a test runs: each test expects none.
std::vector<std::string>& ProtobufLog() {
  static std::vector<std::string> lines;
  return lines;
}

class ImageStringsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ProtobufLog().clear();
    google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string& message) {
      ProtobufLog().push_back(message);
    });
  }
  void TearDown() override {
    google::protobuf::SetLogHandler(nullptr);
    EXPECT_TRUE(ProtobufLog().empty()) << "protobuf logged: " << ProtobufLog().front();
  }
};

// A header whose producer holds `text`, as wire bytes: field 1 (header) of Image, field 3 (producer) of Header.
std::string HeaderWithProducer(const std::string& text) {
  v1::Image image;
  image.mutable_header()->set_format_major(1);
  std::string producer;
  producer.push_back(static_cast<char>((3 << 3) | 2));
  producer.push_back(static_cast<char>(text.size()));  // tests keep it under 128 bytes
  producer += text;
  std::string header;
  header.push_back(static_cast<char>((1 << 3) | 2));
  header.push_back(static_cast<char>(producer.size()));
  return header + producer;
}

// The wire bytes of `image` with `from` replaced by `to` (same length) once: a string protobuf would not serialize
// without logging.
std::string PayloadWith(const v1::Image& image, const std::string& from, const std::string& to) {
  std::string payload;
  EXPECT_TRUE(image.SerializeToString(&payload));
  const std::size_t at = payload.find(from);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(from.size(), to.size());
  return payload.replace(at, from.size(), to);
}

TEST_F(ImageStringsTest, KnownSequences) {
  // RFC 3629, section 4 and its examples, and Unicode's definition of the surrogates.
  for (const char* good : {"", "epollcr", "\x41\xE2\x89\xA2\xCE\x91\x2E", "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
                           "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "\xEF\xBB\xBF\xF0\xA3\x8E\xB4", "\xF4\x8F\xBF\xBF",
                           "\xC2\x80", "\xED\x9F\xBF", "\xEE\x80\x80"}) {
    EXPECT_TRUE(IsUtf8(good)) << good;
  }
  for (const char* bad : {"\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xE0\x9F\xBF", "\xED\xA0\x80",
                          "\xED\xBF\xBF", "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                          "\xFF", "\xC3", "\xE2\x89", "\xF0\xA3\x8E", "a\xC3(b", "\xE2\x28\xA1"}) {
    EXPECT_FALSE(IsUtf8(bad)) << ::testing::PrintToString(std::string(bad));
  }
}

// For random strings, epollcr's check and protobuf's parser accept the same ones. The log handler takes protobuf's
// complaints about the strings it refuses (this test expects them; TearDown then finds none left).
TEST_F(ImageStringsTest, AgreesWithProtobufsParser) {
  std::mt19937 rng(20261206);
  const std::vector<unsigned> interesting = {0x00, 0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
                                             0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 0x9f, 0xa0, 0x8f, 0x90};
  int refused = 0;
  for (int round = 0; round < 50000; ++round) {
    std::string text(rng() % 7, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 2 ? interesting[rng() % interesting.size()] : rng() % 256);
    v1::Image image;
    const bool parsed = image.ParseFromString(HeaderWithProducer(text));
    ASSERT_EQ(IsUtf8(text), parsed) << ::testing::PrintToString(text);
    ASSERT_EQ(CheckPayloadStrings(HeaderWithProducer(text), *v1::Image::descriptor()).ok(), parsed);
    refused += parsed ? 0 : 1;
  }
  EXPECT_GT(refused, 1000);  // the strings were not all valid
  ProtobufLog().clear();
}

TEST_F(ImageStringsTest, DecodeRefusesWithTheLocation) {
  Result<v1::Image> decoded = Decode(HeaderWithProducer("ep\xC3"));
  EXPECT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message, "decode: header.producer: not valid UTF-8");

  World world;
  world.roots["a"] = EventFd::Create();
  world.roots["b"] = EventFd::Create();
  world.roots["cQ"] = EventFd::Create();
  Result<v1::Image> image = Capture(world);
  ASSERT_TRUE(image.ok()) << image.status().message;
  const std::string payload = PayloadWith(image.value(), "cQ", "c\xFF");
  World out;
  const Status loaded = LoadImage(Frame(payload), &out);
  EXPECT_EQ(loaded.message, "decode: roots[2].name: not valid UTF-8");
  EXPECT_TRUE(out.roots.empty());
  const Status with = WithDecoded(payload, [](const v1::Image&) { return Status{}; });
  EXPECT_EQ(with.message, "decode: roots[2].name: not valid UTF-8");
}

TEST_F(ImageStringsTest, UnknownFieldsAndBytesAreNotStrings) {
  // Field 99 of Image (unknown to this build) and a pipe slot's data (bytes) may hold anything.
  std::string payload = HeaderWithProducer("epollcr");
  payload += std::string("\x9a\x06\x02\xFF\xFE", 5);  // tag 99, wire type 2, length 2
  EXPECT_TRUE(CheckPayloadStrings(payload, *v1::Image::descriptor()).ok());
  EXPECT_TRUE(Decode(payload).ok());
  v1::Image image;
  image.add_pipes()->add_slots()->set_data("\xFF\xFE");
  EXPECT_TRUE(FindNonUtf8InMessage(image).empty());
}

TEST_F(ImageStringsTest, ValidateEncodeAndJsonRefuseWithTheLocation) {
  World world;
  world.roots["ok"] = EventFd::Create();
  world.roots[std::string("bad\xC0\xAF")] = EventFd::Create();
  Result<v1::Image> image = Capture(world);
  ASSERT_TRUE(image.ok()) << image.status().message;
  const std::string expected = "roots[0].name: not valid UTF-8";  // "bad..." sorts before "ok"
  EXPECT_EQ(Validate(image.value()).message, expected);
  EXPECT_EQ(Encode(image.value()).status().message, "encode: " + expected);
  EXPECT_EQ(ToJson(image.value()).status().message, "json: " + expected);
  EXPECT_EQ(SaveImage(world).status().message, "encode: " + expected);  // its own check, the same answer
  image.value().mutable_roots(0)->set_name("fine");
  EXPECT_TRUE(Validate(image.value()).ok());
  image.value().mutable_header()->set_architecture("\xED\xA0\x80");
  EXPECT_EQ(Validate(image.value()).message, "header.architecture: not valid UTF-8");
}

TEST_F(ImageStringsTest, EmbedderKindIsChecked) {
  v1::Image image;
  image.mutable_header()->set_format_major(1);
  image.add_files()->set_id(1);
  v1::File* file = image.add_files();
  file->set_id(2);
  file->mutable_embedder()->set_kind("kind-xy");
  EXPECT_TRUE(FindNonUtf8InMessage(image).empty());
  const std::string payload = PayloadWith(image, "kind-xy", "kind\xE2\x82y");
  EXPECT_EQ(CheckPayloadStrings(payload, *v1::Image::descriptor()).non_utf8, "files[1].embedder.kind");
  file->mutable_embedder()->set_kind("k\xE2\x82");
  EXPECT_EQ(FindNonUtf8InMessage(image), "files[1].embedder.kind");
}

// A string longer than the message around it: protobuf reads (and checks) the string before it sees the overrun, so
// it logged about this malformed payload; epollcr refuses it before protobuf parses. Found by the image_reader fuzz
// target (tests/fuzz/regressions/image_reader/string-past-its-message).
TEST_F(ImageStringsTest, AStringPastItsMessageIsRefusedBeforeProtobufParses) {
  std::string payload = HeaderWithProducer("epollcr");
  payload[1] = static_cast<char>(payload[1] - 2);  // the header now ends inside its producer string
  payload += std::string("\xC3\x28", 2);
  const PayloadStrings strings = CheckPayloadStrings(payload, *v1::Image::descriptor());
  EXPECT_TRUE(strings.malformed);
  EXPECT_EQ(Decode(payload).status().message, "decode: the payload is not a valid epollcr.v1.Image");
}

}  // namespace
}  // namespace epollcr::image
