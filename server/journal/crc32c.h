// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
// journal's records and snapshots.
//
// Crc32c() uses the SSE4.2 crc32 instruction when the CPU has it (checked
// once at run time) and a table-driven slice-by-8 loop otherwise; both give
// the same values. Mask()/Unmask() are LevelDB's: a CRC stored next to the
// data it covers is masked, because the CRC of a string that contains
// embedded CRCs is otherwise poorly distributed.
//
// Thread-safe (pure functions).
#ifndef CONVEYOR_SERVER_JOURNAL_CRC32C_H_
#define CONVEYOR_SERVER_JOURNAL_CRC32C_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace conveyor::server::journal::crc32c {

// The CRC32C of data[0, n) appended to a string whose CRC32C is `crc`
// (Extend(Value(a), b) == Value(a + b)).
uint32_t Extend(uint32_t crc, const void* data, size_t n);

inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(absl::string_view s) { return Value(s.data(), s.size()); }

// The two implementations, for tests and benchmarks.
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t n);
// Requires HardwareAvailable().
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t n);
bool HardwareAvailable();

inline constexpr uint32_t kMaskDelta = 0xa282ead8u;

inline uint32_t Mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + kMaskDelta;
}

inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace conveyor::server::journal::crc32c

#endif  // CONVEYOR_SERVER_JOURNAL_CRC32C_H_
