// The bytes buffered in pipes and socket pairs in Boost archives: the base64 codec text and xml archives hold them
// in (lib/src/archive/base64.h), every length and position surviving save -> load in every format, corrupted
// encodings refused with nothing made, archives of the earlier class version still loading, and Boost's own archives
// reading what SaveWorld writes.
#include <gtest/gtest.h>

#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <charconv>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "archive/base64.h"
#include "archive/columns.h"
#include "archive/direct_oarchives.h"
#include "epollcr/boost_world.h"
#include "epollcr/epollcr.h"
#include "world_fixtures.h"

namespace epollcr {
namespace {

using archive::AppendBase64;
using archive::Base64Length;
using archive::DecodeBase64;
using testing::BuildBufferedWorld;
using testing::Describe;
using testing::Envelope;
using testing::RandomBytes;
using testing::ReadAll;

constexpr ArchiveFormat kFormats[] = {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary};
constexpr std::size_t kHeaderSize = 24;  // SaveWorld's envelope before the Boost archive

// RFC 4648's definition, one bit at a time: the reference the table-driven codec is held to.
std::string ReferenceBase64(const std::vector<std::byte>& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  const std::size_t bits = bytes.size() * 8;
  for (std::size_t at = 0; at < bits; at += 6) {
    unsigned value = 0;
    for (std::size_t b = at; b < at + 6; ++b) {
      const unsigned bit = b < bits ? (std::to_integer<unsigned>(bytes[b / 8]) >> (7 - b % 8)) & 1 : 0;
      value = value << 1 | bit;
    }
    out += kAlphabet[value];
  }
  while (out.size() % 4 != 0) out += '=';
  return out;
}

std::string Encode(const std::vector<std::byte>& bytes) {
  std::string text;
  AppendBase64(bytes, text);
  return text;
}

TEST(Base64, MatchesTheRfcAndRoundTripsEveryLength) {
  std::mt19937 random(1);
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (std::size_t n : {4095u, 4096u, 4097u, 65536u, 1u << 20, (1u << 20) + 1, (1u << 20) + 2}) lengths.push_back(n);
  for (std::size_t n : lengths) {
    const std::vector<std::byte> bytes = RandomBytes(n, random);
    const std::string text = Encode(bytes);
    ASSERT_EQ(text.size(), Base64Length(n)) << n;
    if (n <= 300) {
      ASSERT_EQ(text, ReferenceBase64(bytes)) << n;
    }
    std::vector<std::byte> back(n, std::byte{0x5a});
    ASSERT_TRUE(DecodeBase64(text, back)) << n;
    ASSERT_EQ(back, bytes) << n;
  }
  // RFC 4648, section 10.
  const auto ascii = [](std::string_view s) { return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                                                            reinterpret_cast<const std::byte*>(s.data()) + s.size()); };
  EXPECT_EQ(Encode(ascii("")), "");
  EXPECT_EQ(Encode(ascii("f")), "Zg==");
  EXPECT_EQ(Encode(ascii("fo")), "Zm8=");
  EXPECT_EQ(Encode(ascii("foo")), "Zm9v");
  EXPECT_EQ(Encode(ascii("foobar")), "Zm9vYmFy");
  // Appends.
  std::string text = "x";
  AppendBase64(ascii("fo"), text);
  EXPECT_EQ(text, "xZm8=");
}

// A column's text (archive/columns.h ColumnWriter) is std::to_chars' decimal numbers joined by single spaces: every
// number of digits, both ends of the signed and unsigned 64-bit ranges, and enough numbers to fill its buffer several
// times over.
TEST(ColumnText, IsToCharsJoinedBySpaces) {
  std::vector<std::uint64_t> unsigned_values = {0, 9, 10, 99, 100, 101, 999, 1000,
                                                std::numeric_limits<std::uint64_t>::max()};
  std::vector<std::int64_t> signed_values = {0, -1, -9, -10, -99, -100, 1, std::numeric_limits<std::int64_t>::min(),
                                             std::numeric_limits<std::int64_t>::max()};
  std::uint64_t power = 1;
  for (int digits = 1; digits <= 19; ++digits, power *= 10) {
    unsigned_values.insert(unsigned_values.end(), {power - 1, power, power + 1, power * 9});
    signed_values.insert(signed_values.end(), {-static_cast<std::int64_t>(power), static_cast<std::int64_t>(power) - 1});
  }
  std::mt19937_64 random(3);
  for (int i = 0; i < 5000; ++i) {
    unsigned_values.push_back(random() >> (random() % 64));
    signed_values.push_back(static_cast<std::int64_t>(random()) >> (random() % 64));
  }
  auto expected = [](const auto& values) {
    std::string text;
    for (auto v : values) {
      char digits[24];
      if (!text.empty()) text += ' ';
      text.append(digits, std::to_chars(digits, digits + sizeof digits, v).ptr);
    }
    return text;
  };
  std::string text = "earlier contents";
  {
    archive::ColumnWriter column(&text);
    for (std::uint64_t v : unsigned_values) column.Add(v);
  }
  EXPECT_EQ(text, expected(unsigned_values));
  {
    archive::ColumnWriter column(&text);
    for (std::int64_t v : signed_values) column.Add(v);
  }
  EXPECT_EQ(text, expected(signed_values));
  { archive::ColumnWriter column(&text); }
  EXPECT_EQ(text, "");
}

// FromDecimal gives std::from_chars' answer (value, end and error) for every type a column or a Boost archive reads,
// on the edges (limits, one past them, "-", "-0", leading zeros, a '+', trailing text) and on random text.
template <typename T>
void ExpectFromDecimalIsFromChars(const std::vector<std::string>& inputs) {
  for (const std::string& in : inputs) {
    SCOPED_TRACE("\"" + in + "\" as " + std::to_string(sizeof(T)) +
                 (std::is_signed_v<T> ? "-byte signed" : "-byte unsigned"));
    T want = 42, got = 42;  // unchanged on an error
    const auto a = std::from_chars(in.data(), in.data() + in.size(), want);
    const auto b = archive::FromDecimal(in.data(), in.data() + in.size(), got);
    EXPECT_EQ(b.ec, a.ec);
    EXPECT_EQ(b.ptr - in.data(), a.ptr - in.data());
    EXPECT_EQ(got, want);
  }
}

TEST(ColumnText, FromDecimalIsFromChars) {
  std::vector<std::string> inputs = {"", "-", "+1", "-0", "0", "00", "007", "1 2", "12x", " 1", "--1", "-x", "9", "10"};
  for (const std::string& edge : {std::to_string(std::numeric_limits<std::uint64_t>::max()),
                                  std::to_string(std::numeric_limits<std::int64_t>::min()),
                                  std::to_string(std::numeric_limits<std::int64_t>::max())}) {
    inputs.push_back(edge);
    inputs.push_back(edge + "0");
    inputs.push_back(edge + " 1");
  }
  for (std::uint64_t power = 1, n = 0; n < 20; ++n, power *= 10) {
    for (std::uint64_t v : {power - 1, power, power + 1}) {
      inputs.push_back(std::to_string(v));
      inputs.push_back("-" + std::to_string(v));
    }
  }
  for (long long limit : {255LL, 256LL, 127LL, 128LL, 32767LL, 32768LL, 65535LL, 65536LL, 2147483647LL, 2147483648LL,
                          4294967295LL, 4294967296LL}) {
    inputs.push_back(std::to_string(limit));
    inputs.push_back(std::to_string(-limit));
    inputs.push_back(std::to_string(-limit - 1));
  }
  std::mt19937_64 random(7);
  const std::string alphabet = "0123456789-+ x";
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    const std::size_t length = random() % 24;
    for (std::size_t k = 0; k < length; ++k) {
      // The first character from the whole alphabet; the others mostly digits, now and then a sign, space or letter.
      const std::size_t choices = k == 0 || random() % 8 == 0 ? alphabet.size() : 10;
      text += alphabet[random() % choices];
    }
    inputs.push_back(text);
  }
  ExpectFromDecimalIsFromChars<signed char>(inputs);
  ExpectFromDecimalIsFromChars<unsigned char>(inputs);
  ExpectFromDecimalIsFromChars<short>(inputs);
  ExpectFromDecimalIsFromChars<unsigned short>(inputs);
  ExpectFromDecimalIsFromChars<int>(inputs);
  ExpectFromDecimalIsFromChars<unsigned int>(inputs);
  ExpectFromDecimalIsFromChars<long>(inputs);
  ExpectFromDecimalIsFromChars<unsigned long>(inputs);
  ExpectFromDecimalIsFromChars<long long>(inputs);
  ExpectFromDecimalIsFromChars<unsigned long long>(inputs);
}

// Every character position of the encodings of 0 to 12 bytes, replaced by a character outside the alphabet or by a
// misplaced '=', is refused; so are a wrong length and padding bits that are not zero (one encoding per byte string).
TEST(Base64, RefusesAnythingButTheCanonicalEncoding) {
  std::mt19937 random(2);
  for (std::size_t n = 0; n <= 12; ++n) {
    const std::vector<std::byte> bytes = RandomBytes(n, random);
    const std::string text = Encode(bytes);
    std::vector<std::byte> out(n);
    for (std::size_t at = 0; at < text.size(); ++at) {
      for (char bad : {'*', ' ', '\n', '\0', '-', '_', '\xff', '='}) {
        if (text[at] == bad) continue;
        std::string corrupted = text;
        corrupted[at] = bad;
        EXPECT_FALSE(DecodeBase64(corrupted, out)) << n << " bytes, '" << bad << "' at " << at << ": " << corrupted;
      }
    }
    EXPECT_FALSE(DecodeBase64(text + "AAAA", out)) << n;
    EXPECT_FALSE(DecodeBase64(text + "=", out)) << n;
    if (!text.empty()) {
      EXPECT_FALSE(DecodeBase64(text.substr(0, text.size() - 1), out)) << n;
    }
    if (n > 0) {
      std::vector<std::byte> shorter(n - 1);
      EXPECT_FALSE(DecodeBase64(text, shorter)) << n;
    }
  }
  // The bits that padding leaves over: 4 after one byte ("Zg=="), 2 after two ("Zm8="); only zero is canonical.
  std::byte one[1], two[2];
  int accepted = 0;
  for (char c : std::string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")) {
    accepted += DecodeBase64(std::string("Z") + c + "==", one);
  }
  EXPECT_EQ(accepted, 4);  // g, w, A, Q: the four characters whose low 4 bits are zero
  EXPECT_TRUE(DecodeBase64("Zg==", one));
  EXPECT_FALSE(DecodeBase64("Zh==", one));
  EXPECT_TRUE(DecodeBase64("Zm8=", two));
  EXPECT_FALSE(DecodeBase64("Zm9=", two));
  EXPECT_FALSE(DecodeBase64("Zm8A", two));
  EXPECT_FALSE(DecodeBase64("Zg=A", one));
}

// What a world's pipe and socket pair hold, read back after save -> load; and save, load, save gives the same archive.
void ExpectBytesSurvive(ArchiveFormat format, std::span<const std::size_t> pipe_writes,
                        std::span<const std::size_t> socket_writes, std::size_t pipe_read) {
  const std::string what = std::string(ArchiveFormatName(format)) + " pipe writes " +
                           std::to_string(pipe_writes.size()) + " (first " +
                           std::to_string(pipe_writes.empty() ? 0 : pipe_writes[0]) + "), socket writes " +
                           std::to_string(socket_writes.size()) + ", read " + std::to_string(pipe_read);
  std::vector<std::byte> pipe_bytes, socket_bytes;
  World original;
  BuildBufferedWorld(original, pipe_writes, socket_writes, pipe_read, 3, &pipe_bytes, &socket_bytes);
  Result<std::string> saved = SaveWorld(original, format);
  ASSERT_TRUE(saved.ok()) << what << ": " << saved.status().message;
  World loaded;
  const Status s = LoadWorld(saved.value(), &loaded);
  ASSERT_TRUE(s.ok()) << what << ": " << s.message;
  EXPECT_EQ(Describe(loaded), Describe(original)) << what;
  EXPECT_EQ(SaveWorld(loaded, format).value(), saved.value()) << what;
  EXPECT_EQ(ReadAll(loaded, 0), pipe_bytes) << what;
  EXPECT_EQ(ReadAll(loaded, 3), socket_bytes) << what;
}

TEST(ArchiveBytes, EveryLengthSurvivesEveryFormat) {
  for (ArchiveFormat format : kFormats) {
    // One slot or segment of each length 0 to 40 (0 to 2 mod 3 many times), then page-sized ones.
    for (std::size_t n = 0; n <= 40; ++n) {
      const std::size_t writes[] = {n};
      ExpectBytesSurvive(format, writes, writes, 0);
      if (n > 1) ExpectBytesSurvive(format, writes, {}, 1);  // the slot's bytes start past its page's start
    }
    for (std::size_t n : {4095u, 4096u, 4097u, 8191u, 12289u}) {
      const std::size_t writes[] = {n};
      ExpectBytesSurvive(format, writes, writes, 0);
      ExpectBytesSurvive(format, writes, {}, 2);
    }
    // A full pipe (16 pages) and many segments of mixed lengths.
    const std::size_t full[] = {65536};
    std::vector<std::size_t> segments;
    for (std::size_t i = 1; i <= 30; ++i) segments.push_back(i * 101 % 997 + 1);
    ExpectBytesSurvive(format, full, segments, 4098);
  }
}

// One pipe slot of 5 bytes, saved in `format`: the archive without its envelope, and the encoding of the slot's bytes
// in it (found by its text).
struct FiveBytes {
  std::string archive;
  std::string encoded;
};
FiveBytes SaveFiveBytes(ArchiveFormat format) {
  const std::size_t writes[] = {5};
  std::vector<std::byte> pipe_bytes, socket_bytes;
  World w;
  BuildBufferedWorld(w, writes, {}, 0, 4, &pipe_bytes, &socket_bytes);
  return {SaveWorld(w, format).value().substr(kHeaderSize), Encode(pipe_bytes)};
}

// A corrupted encoding in a well-framed archive (the envelope's checksum is right) is refused naming the slot, and
// nothing is made.
TEST(ArchiveBytes, CorruptedEncodingsAreRefusedWithNothingMade) {
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml}) {
    const FiveBytes five = SaveFiveBytes(format);
    ASSERT_EQ(five.encoded.size(), 8u);
    ASSERT_EQ(five.encoded.substr(7), "=");
    const std::size_t at = five.archive.find(five.encoded);
    ASSERT_NE(at, std::string::npos) << five.archive;
    // Same length, so that a text archive's length prefix still holds: a character outside the alphabet, '=' in the
    // middle, the padding replaced, padding bits that are not zero.
    std::vector<std::string> corrupted;
    for (std::size_t i : {0u, 3u, 7u}) {
      std::string bad = five.encoded;
      bad[i] = '*';
      corrupted.push_back(bad);
    }
    corrupted.push_back(five.encoded.substr(0, 2) + "=" + five.encoded.substr(3));
    corrupted.push_back(five.encoded.substr(0, 7) + "A");
    std::string bits = five.encoded;
    bits[6] = 'B';  // 5 bytes leave 2 bits over in the 7th character; 'B' (1) sets one
    corrupted.push_back(bits);
    if (format == ArchiveFormat::kBoostXml) {  // xml strings have no length prefix: a shorter and a longer encoding
      corrupted.push_back(five.encoded.substr(0, 4));
      corrupted.push_back(five.encoded + "AAAA");
    }
    for (const std::string& bad : corrupted) {
      std::string archive = five.archive;
      archive.replace(at, five.encoded.size(), bad);
      const long live_before = File::LiveFiles();
      World w;
      const Status s = LoadWorld(Envelope(archive, format), &w);
      EXPECT_FALSE(s.ok()) << ArchiveFormatName(format) << " " << bad;
      EXPECT_NE(s.message.find("pipe slot: its bytes are not the base64 encoding of 5 bytes"), std::string::npos)
          << ArchiveFormatName(format) << " " << bad << ": " << s.message;
      EXPECT_EQ(w.fds.Count(), 0);
      EXPECT_TRUE(w.roots.empty());
      EXPECT_EQ(File::LiveFiles(), live_before);
    }
  }
}

// Archives written before the bytes were base64 strings (class version 1 of PipeBuffer::Slot and
// SocketPairState::Segment: Boost's binary_object, which it writes in text and xml as base64 of its own, with line
// breaks and without padding). Made with BuildBufferedWorld({4097, 4}, {7, 2, 3}, read 2, seed 17) and SaveWorld of
// the library at commit 72e7f0a (the envelope taken off), written as C++ raw string literals.
constexpr std::string_view kVersion1Text =
#include "fixtures/buffered_bytes_v1.txt.inc"
    ;
constexpr std::string_view kVersion1Xml =
#include "fixtures/buffered_bytes_v1.xml.inc"
    ;

TEST(ArchiveBytes, ArchivesOfTheEarlierClassVersionStillLoad) {
  const std::size_t pipe_writes[] = {4097, 4};
  const std::size_t socket_writes[] = {7, 2, 3};
  for (auto [format, archive] : {std::pair{ArchiveFormat::kBoostText, kVersion1Text},
                                 std::pair{ArchiveFormat::kBoostXml, kVersion1Xml}}) {
    std::vector<std::byte> pipe_bytes, socket_bytes;
    World original;
    BuildBufferedWorld(original, pipe_writes, socket_writes, 2, 17, &pipe_bytes, &socket_bytes);
    World loaded;
    const Status s = LoadWorld(Envelope(archive, format), &loaded);
    ASSERT_TRUE(s.ok()) << ArchiveFormatName(format) << ": " << s.message;
    EXPECT_EQ(Describe(loaded), Describe(original));
    // Saved again, it is what this build writes for the same world (the bytes now as base64 strings).
    const std::string again = SaveWorld(loaded, format).value();
    EXPECT_EQ(again, SaveWorld(original, format).value()) << ArchiveFormatName(format);
    EXPECT_NE(again.substr(kHeaderSize), archive);
    EXPECT_EQ(ReadAll(loaded, 0), pipe_bytes) << ArchiveFormatName(format);
    EXPECT_EQ(ReadAll(loaded, 3), socket_bytes) << ArchiveFormatName(format);
  }
}

// An embedder's archives are Boost's own: Boost's xml_oarchive writes what SaveWorld writes (which saves through an
// archive of its own, lib/src/archive/direct_oarchives.h), byte for byte, strings that need escaping included
// (the root's name); Boost's text and xml input archives read what SaveWorld writes, bytes included.
TEST(ArchiveBytes, BoostsOwnArchivesWriteAndReadTheSame) {
  const std::size_t pipe_writes[] = {4097, 4};
  const std::size_t socket_writes[] = {7, 2, 3};
  std::vector<std::byte> pipe_bytes, socket_bytes;
  World original;
  BuildBufferedWorld(original, pipe_writes, socket_writes, 2, 5, &pipe_bytes, &socket_bytes);
  original.roots["<a & \"b\" 'c'>"] = original.fds.Get(0);
  const std::string xml = SaveWorld(original, ArchiveFormat::kBoostXml).value().substr(kHeaderSize);
  ASSERT_NE(xml.find("&lt;a &amp; &quot;b&quot; &apos;c&apos;&gt;"), std::string::npos);
  std::ostringstream boosts_xml;
  {
    boost::archive::xml_oarchive ar(boosts_xml);
    SaveWorldToArchive(ar, original);
  }
  EXPECT_EQ(boosts_xml.str(), xml);
  std::ostringstream boosts_text;
  {
    boost::archive::text_oarchive ar(boosts_text);
    SaveWorldToArchive(ar, original);
  }
  EXPECT_EQ(boosts_text.str(), SaveWorld(original, ArchiveFormat::kBoostText).value().substr(kHeaderSize));

  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml}) {
    std::istringstream is(SaveWorld(original, format).value().substr(kHeaderSize));
    World loaded;
    if (format == ArchiveFormat::kBoostText) {
      boost::archive::text_iarchive ar(is);
      LoadWorldFromArchive(ar, loaded);
    } else {
      boost::archive::xml_iarchive ar(is);
      LoadWorldFromArchive(ar, loaded);
    }
    EXPECT_EQ(Describe(loaded), Describe(original)) << ArchiveFormatName(format);
    EXPECT_EQ(ReadAll(loaded, 0), pipe_bytes) << ArchiveFormatName(format);
    EXPECT_EQ(ReadAll(loaded, 3), socket_bytes) << ArchiveFormatName(format);
  }
}

// A tree of elements deeper than the tabs DirectXmlOArchive writes at once, with escaped strings, numbers of every
// type at their limits and names of every kind of character Boost takes: byte for byte what Boost's xml_oarchive and
// text_oarchive write; a name Boost refuses is refused too.
struct Node {
  std::string text;
  std::int16_t i16 = std::numeric_limits<std::int16_t>::min();
  std::uint16_t u16 = std::numeric_limits<std::uint16_t>::max();
  std::int32_t i32 = std::numeric_limits<std::int32_t>::min();
  std::uint32_t u32 = std::numeric_limits<std::uint32_t>::max();
  std::int64_t i64 = std::numeric_limits<std::int64_t>::min();
  std::uint64_t u64 = std::numeric_limits<std::uint64_t>::max();
  long long ll = -1;
  unsigned long long ull = 0;
  std::vector<Node> children;
  template <typename Ar>
  void serialize(Ar& ar, unsigned) {
    using boost::serialization::make_nvp;
    ar& make_nvp("text_-.09AZaz", text) & make_nvp("i16", i16) & make_nvp("u16", u16) & make_nvp("i32", i32) &
        make_nvp("u32", u32) & make_nvp("i64", i64) & make_nvp("u64", u64) & make_nvp("ll", ll) & make_nvp("ull", ull) &
        make_nvp("children", children);
  }
};

template <typename Oar>
std::string WriteXml(const Node& root, const char* name) {
  std::ostringstream os;
  {
    Oar ar(os);
    ar << boost::serialization::make_nvp(name, root);
  }
  return std::move(os).str();
}

TEST(DirectOArchives, WriteWhatBoostWrites) {
  Node root;
  root.text = "root <&>";
  Node* at = &root;
  for (int depth = 0; depth < 40; ++depth) {
    at->children.resize(2);  // the second with no text
    at->children.front().text = "level " + std::to_string(depth) + (depth % 3 == 0 ? " 'quoted' \"too\"" : "");
    at = &at->children.front();
  }
  const std::string boosts = WriteXml<boost::archive::xml_oarchive>(root, "root");
  EXPECT_EQ(WriteXml<archive::DirectXmlOArchive>(root, "root"), boosts);
  EXPECT_NE(boosts.find(std::string(40, '\t')), std::string::npos);  // deeper than the tabs written at once
  EXPECT_NE(boosts.find("<i64>-9223372036854775808</i64>"), std::string::npos);
  EXPECT_EQ(WriteXml<archive::DirectTextOArchive>(root, "root"), WriteXml<boost::archive::text_oarchive>(root, "root"));
  for (const char* bad : {"a b", "a<b", "a/b", "a:b"}) {
    std::string boost_error, our_error;
    try {
      WriteXml<boost::archive::xml_oarchive>(root, bad);
    } catch (const std::exception& e) {
      boost_error = e.what();
    }
    try {
      WriteXml<archive::DirectXmlOArchive>(root, bad);
    } catch (const std::exception& e) {
      our_error = e.what();
    }
    EXPECT_FALSE(boost_error.empty()) << bad;
    EXPECT_EQ(our_error, boost_error) << bad;
  }
}

}  // namespace
}  // namespace epollcr
