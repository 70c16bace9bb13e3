#include "server/journal/crc32c.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace conveyor::server::journal::crc32c {
namespace {

TEST(Crc32cTest, StandardCheckValue) {
  EXPECT_EQ(Value("123456789"), 0xE3069283u);
}

TEST(Crc32cTest, ThirtyTwoZeroBytes) {
  std::string zeros(32, '\0');
  EXPECT_EQ(Value(zeros), 0x8A9136AAu);
}

TEST(Crc32cTest, Rfc3720Vectors) {
  std::string ones(32, '\xff');
  EXPECT_EQ(Value(ones), 0x62A8AB43u);
  std::string inc(32, '\0');
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<char>(i);
  EXPECT_EQ(Value(inc), 0x46DD794Eu);
}

TEST(Crc32cTest, ExtendEqualsWholeValueAtEverySplit) {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>(i * 7 + 3));
  const uint32_t whole = Value(data);
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t crc = Value(data.data(), split);
    crc = Extend(crc, data.data() + split, data.size() - split);
    ASSERT_EQ(crc, whole) << "split at " << split;
  }
}

TEST(Crc32cTest, PortableAndHardwareAgreeAtAllAlignmentsAndLengths) {
  if (!HardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::string buf(600, '\0');
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131 + 17);
  for (size_t start = 0; start < 9; ++start) {
    for (size_t len = 0; len + start <= buf.size(); len += 13) {
      ASSERT_EQ(ExtendPortable(0, buf.data() + start, len),
                ExtendHardware(0, buf.data() + start, len))
          << "start " << start << " len " << len;
    }
  }
}

TEST(Crc32cTest, PortableMatchesVectors) {
  EXPECT_EQ(ExtendPortable(0, "123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(ExtendPortable(0, zeros.data(), zeros.size()), 0x8A9136AAu);
}

TEST(Crc32cTest, MaskRoundTripsAndChangesTheValue) {
  const uint32_t crc = Value("foo");
  EXPECT_NE(Mask(crc), crc);
  EXPECT_NE(Mask(Mask(crc)), crc);
  EXPECT_EQ(Unmask(Mask(crc)), crc);
  EXPECT_EQ(Unmask(Unmask(Mask(Mask(crc)))), crc);
}

}  // namespace
}  // namespace conveyor::server::journal::crc32c
