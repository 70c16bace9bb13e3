#include "server/journal/format.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "server/journal/crc32c.h"

namespace conveyor::server::journal {
namespace {

constexpr char kSegmentMagic[4] = {'C', 'V', 'Y', 'J'};
constexpr char kSnapshotMagic[4] = {'C', 'V', 'Y', 'S'};
constexpr char kSegmentSuffix[] = ".log";
constexpr char kSnapshotPrefix[] = "snapshot-";
constexpr char kSnapshotSuffix[] = ".snap";
constexpr char kFormatPrefix[] = "conveyor-journal ";

void PutFixed32(std::string* dst, uint32_t v) {
  char buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  dst->append(buf, 4);
}

void PutFixed64(std::string* dst, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  dst->append(buf, 8);
}

uint32_t GetFixed32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | (static_cast<uint32_t>(u[1]) << 8) |
         (static_cast<uint32_t>(u[2]) << 16) |
         (static_cast<uint32_t>(u[3]) << 24);
}

uint64_t GetFixed64(const char* p) {
  return static_cast<uint64_t>(GetFixed32(p)) |
         (static_cast<uint64_t>(GetFixed32(p + 4)) << 32);
}

// Parses exactly 20 decimal digits.
bool ParseNumber20(absl::string_view digits, uint64_t* out) {
  if (digits.size() != 20) return false;
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(digits, out);
}

bool AllZero(absl::string_view data) {
  for (char c : data) {
    if (c != 0) return false;
  }
  return true;
}

// Bytes ValidRecordAfter may checksum before giving up (~0.1 s): damage
// made of a repeating pattern could otherwise make every offset a plausible
// multi-megabyte record.
constexpr uint64_t kResyncCrcBudget = uint64_t{1} << 30;

// Whether a record that passes its length and CRC checks starts anywhere in
// data[from, end): the test for "followed by more valid data". When the
// budget runs out it answers yes: refusing to start is the safe mistake.
bool ValidRecordAfter(absl::string_view data, size_t from) {
  if (data.size() < kRecordHeaderSize + kSeqSize) return false;
  const size_t last = data.size() - kRecordHeaderSize - kSeqSize;
  uint64_t budget = kResyncCrcBudget;
  for (size_t o = from; o <= last; ++o) {
    uint32_t len = GetFixed32(data.data() + o);
    if (len < kSeqSize || len > data.size() - o - kRecordHeaderSize) continue;
    uint8_t type = static_cast<uint8_t>(data[o + 8]);
    if (type < 1 || type > 4) continue;
    if (budget < len) return true;
    budget -= len;
    uint32_t crc = crc32c::Unmask(GetFixed32(data.data() + o + 4));
    if (crc == crc32c::Value(data.data() + o + 8, 1 + len)) return true;
  }
  return false;
}

}  // namespace

// ── File names ──

std::string SegmentFileName(uint64_t number) {
  return absl::StrFormat("%020u%s", number, kSegmentSuffix);
}

bool ParseSegmentFileName(absl::string_view name, uint64_t* number) {
  if (!absl::ConsumeSuffix(&name, kSegmentSuffix)) return false;
  return ParseNumber20(name, number);
}

std::string SnapshotFileName(uint64_t cut) {
  return absl::StrFormat("%s%020u%s", kSnapshotPrefix, cut, kSnapshotSuffix);
}

bool ParseSnapshotFileName(absl::string_view name, uint64_t* cut) {
  if (!absl::ConsumePrefix(&name, kSnapshotPrefix)) return false;
  if (!absl::ConsumeSuffix(&name, kSnapshotSuffix)) return false;
  return ParseNumber20(name, cut);
}

std::string FormatFileContents(uint32_t version) {
  return absl::StrCat(kFormatPrefix, version, "\n");
}

absl::StatusOr<uint32_t> ParseFormatFile(absl::string_view contents) {
  absl::string_view rest = absl::StripTrailingAsciiWhitespace(contents);
  uint32_t version = 0;
  if (!absl::ConsumePrefix(&rest, kFormatPrefix) ||
      !absl::SimpleAtoi(rest, &version) || version == 0) {
    return absl::DataLossError(absl::StrCat(
        "not a journal FORMAT file: \"", absl::CHexEscape(contents.substr(0, 64)),
        "\""));
  }
  return version;
}

// ── Segments ──

std::string EncodeSegmentHeader(const SegmentHeader& header) {
  std::string out(kSegmentMagic, sizeof(kSegmentMagic));
  PutFixed32(&out, kFormatVersion);
  PutFixed64(&out, header.number);
  PutFixed64(&out, header.first_seq);
  PutFixed32(&out, 0);
  PutFixed32(&out, crc32c::Mask(crc32c::Value(out)));
  return out;
}

absl::StatusOr<SegmentHeader> DecodeSegmentHeader(absl::string_view data) {
  if (data.size() < kSegmentHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("short segment header (", data.size(), " bytes)"));
  }
  if (std::memcmp(data.data(), kSegmentMagic, 4) != 0) {
    return absl::DataLossError("bad segment magic (not a journal segment)");
  }
  uint32_t stored = crc32c::Unmask(GetFixed32(data.data() + 28));
  if (stored != crc32c::Value(data.data(), 28)) {
    return absl::DataLossError("segment header checksum mismatch");
  }
  uint32_t version = GetFixed32(data.data() + 4);
  if (version > kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("segment format version ", version,
                     " is newer than this build reads (", kFormatVersion, ")"));
  }
  if (version == 0) return absl::DataLossError("segment format version 0");
  SegmentHeader h;
  h.number = GetFixed64(data.data() + 8);
  h.first_seq = GetFixed64(data.data() + 16);
  return h;
}

void EncodeRecord(RecordType type, uint64_t seq, absl::string_view data,
                  std::string* dst) {
  const size_t start = dst->size();
  const uint32_t length = static_cast<uint32_t>(kSeqSize + data.size());
  PutFixed32(dst, length);
  PutFixed32(dst, 0);  // CRC, filled in below.
  dst->push_back(static_cast<char>(type));
  PutFixed64(dst, seq);
  dst->append(data.data(), data.size());
  uint32_t crc = crc32c::Value(dst->data() + start + 8, 1 + length);
  uint32_t masked = crc32c::Mask(crc);
  for (int i = 0; i < 4; ++i) {
    (*dst)[start + 4 + i] = static_cast<char>(masked >> (8 * i));
  }
}

void EncodeBatch(const std::vector<std::string>& records, uint64_t first_seq,
                 std::string* dst) {
  const size_t n = records.size();
  for (size_t i = 0; i < n; ++i) {
    RecordType type = n == 1        ? RecordType::kFull
                      : i == 0      ? RecordType::kFirst
                      : i + 1 == n  ? RecordType::kLast
                                    : RecordType::kMiddle;
    EncodeRecord(type, first_seq + i, records[i], dst);
  }
}

size_t EncodedBatchSize(const std::vector<std::string>& records) {
  size_t total = 0;
  for (const std::string& r : records) total += EncodedRecordSize(r.size());
  return total;
}

SegmentScan ScanSegment(absl::string_view data, uint64_t prev_seq) {
  SegmentScan out;
  out.last_seq = prev_seq;
  out.end = kSegmentHeaderSize;
  size_t off = kSegmentHeaderSize;
  uint64_t last = prev_seq;
  bool in_batch = false;
  size_t batch_start = off;
  size_t batch_first_index = 0;
  std::string problem;
  bool rule_broken = false;  // A valid record that breaks the rules.

  while (off < data.size()) {
    const size_t left = data.size() - off;
    if (left < kRecordHeaderSize) {
      problem = "truncated record header";
      break;
    }
    const uint32_t len = GetFixed32(data.data() + off);
    if (len == 0) {
      problem = "zero record length followed by data";
      break;
    }
    if (len < kSeqSize || len > left - kRecordHeaderSize) {
      problem = absl::StrCat("impossible record length ", len);
      break;
    }
    const uint32_t stored = crc32c::Unmask(GetFixed32(data.data() + off + 4));
    if (stored != crc32c::Value(data.data() + off + 8, 1 + len)) {
      problem = "record checksum mismatch";
      break;
    }
    const uint8_t type = static_cast<uint8_t>(data[off + 8]);
    const uint64_t seq = GetFixed64(data.data() + off + 9);
    if (type < 1 || type > 4) {
      problem = absl::StrCat("unknown record type ", type);
      rule_broken = true;
      break;
    }
    if (seq <= last) {
      problem = absl::StrCat("sequence number ", seq, " does not follow ", last);
      rule_broken = true;
      break;
    }
    const auto rtype = static_cast<RecordType>(type);
    const bool starts = rtype == RecordType::kFull || rtype == RecordType::kFirst;
    if (starts == in_batch) {
      problem = in_batch ? "batch started before the previous one ended"
                         : "batch continued without a start";
      rule_broken = true;
      break;
    }
    if (rtype == RecordType::kFirst) {
      in_batch = true;
      batch_start = off;
      batch_first_index = out.records.size();
    }
    out.records.push_back(
        {seq, data.substr(off + kRecordHeaderSize + kSeqSize, len - kSeqSize)});
    last = seq;
    off += kRecordHeaderSize + len;
    if (rtype == RecordType::kFull || rtype == RecordType::kLast) {
      in_batch = false;
      out.end = off;
      out.last_seq = seq;
    }
  }

  if (in_batch) out.records.resize(batch_first_index);
  const absl::string_view rest = data.substr(std::min(off, data.size()));
  if (!rule_broken && AllZero(rest)) {
    if (!in_batch) return out;  // kClean.
    out.tail = SegmentScan::Tail::kTorn;
    out.problem_offset = batch_start;
    out.problem = absl::StrCat("batch starting at offset ", batch_start,
                               " has no last record");
    return out;
  }
  out.problem_offset = off;
  out.problem = problem;
  out.tail = (rule_broken || ValidRecordAfter(data, off + 1))
                 ? SegmentScan::Tail::kCorrupt
                 : SegmentScan::Tail::kTorn;
  return out;
}

// ── Snapshots ──

std::string EncodeSnapshotHeader(uint64_t cut, absl::string_view state) {
  std::string out(kSnapshotMagic, sizeof(kSnapshotMagic));
  PutFixed32(&out, kFormatVersion);
  PutFixed64(&out, cut);
  PutFixed64(&out, state.size());
  uint32_t crc = crc32c::Extend(crc32c::Value(out), state.data(), state.size());
  PutFixed32(&out, crc32c::Mask(crc));
  return out;
}

std::string EncodeSnapshot(uint64_t cut, absl::string_view state) {
  std::string out = EncodeSnapshotHeader(cut, state);
  out.append(state.data(), state.size());
  return out;
}

absl::StatusOr<DecodedSnapshot> DecodeSnapshot(absl::string_view data) {
  if (data.size() < kSnapshotHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("short snapshot (", data.size(), " bytes)"));
  }
  if (std::memcmp(data.data(), kSnapshotMagic, 4) != 0) {
    return absl::DataLossError("bad snapshot magic");
  }
  uint32_t version = GetFixed32(data.data() + 4);
  uint64_t length = GetFixed64(data.data() + 16);
  if (length != data.size() - kSnapshotHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("snapshot state length ", length, " but ",
                     data.size() - kSnapshotHeaderSize, " bytes follow"));
  }
  absl::string_view state = data.substr(kSnapshotHeaderSize);
  uint32_t crc =
      crc32c::Extend(crc32c::Value(data.data(), 24), state.data(), state.size());
  if (crc32c::Unmask(GetFixed32(data.data() + 24)) != crc) {
    return absl::DataLossError("snapshot checksum mismatch");
  }
  if (version > kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot format version ", version,
                     " is newer than this build reads (", kFormatVersion, ")"));
  }
  if (version == 0) return absl::DataLossError("snapshot format version 0");
  return DecodedSnapshot{GetFixed64(data.data() + 8), state};
}

}  // namespace conveyor::server::journal
