// libFuzzer target: DecodeEntry (server/journal_codec.h), the decoder of the
// broker's journal records, on arbitrary bytes.
//
// Properties checked (a violation aborts, so libFuzzer saves the input):
//  - no crash, whatever the bytes;
//  - a successful decode has a kind set, and re-serializes to bytes that
//    decode again to an equal message (compared by deterministic
//    serialization, so that NaN doubles compare equal to themselves);
//  - the protobuf JSON that `conveyord --verify --dump` prints can be made
//    (or fails cleanly) for every decoded entry.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "conveyor/internal/journal.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/json_util.h"
#include "server/journal_codec.h"

namespace {

#define FUZZ_CHECK(cond)                                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,     \
                   __LINE__, #cond);                                     \
      std::abort();                                                      \
    }                                                                    \
  } while (0)

std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    FUZZ_CHECK(m.SerializeToCodedStream(&coded));
  }
  return out;
}

void IgnoreLog(google::protobuf::LogLevel, const char*, int, const std::string&) {}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // proto3 parsing logs every string field that is not UTF-8.
  google::protobuf::SetLogHandler(&IgnoreLog);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const absl::string_view data(reinterpret_cast<const char*>(bytes), size);
  absl::StatusOr<conveyor::internal::JournalEntry> entry = conveyor::server::DecodeEntry(data);
  if (!entry.ok()) {
    FUZZ_CHECK(entry.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  FUZZ_CHECK(entry->kind_case() != conveyor::internal::JournalEntry::KIND_NOT_SET);

  const std::string first = Deterministic(*entry);
  absl::StatusOr<conveyor::internal::JournalEntry> again = conveyor::server::DecodeEntry(first);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(Deterministic(*again) == first);
  FUZZ_CHECK(again->kind_case() == entry->kind_case());

  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(*entry, &json, options);
  return 0;
}
