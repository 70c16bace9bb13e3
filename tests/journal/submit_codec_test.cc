// The submit record (server/journal_codec.h): EncodeSubmitted writes a task's
// payload and idempotency key straight into the record's bytes after the
// fields it builds as a message. Whatever the task carries, the record must
// decode to exactly the message SubmittedToRecord builds, which is what a
// plain SerializeToString of it would give.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "conveyor/internal/journal.pb.h"
#include "gtest/gtest.h"
#include "server/journal_codec.h"
#include "server/queue.h"
#include "server/task.h"

namespace conveyor::server {
namespace {

namespace pb = ::conveyor::internal;

struct Case {
  std::string name;
  std::string payload;
  std::string key;
  bool extra = false;  // headers, delay, retry, rate and concurrency keys
  bool links = false;  // a group member's workflow links
};

class SubmitCodecTest : public ::testing::TestWithParam<Case> {};

TEST_P(SubmitCodecTest, RecordDecodesToTheMessageSubmittedToRecordBuilds) {
  const Case& c = GetParam();
  QueueConfig config;
  config.name = "codec-queue";
  Queue queue(config, [](uint64_t) -> Task* { return nullptr; });
  Task* task = Task::Create(TaskId(0x0123456789abcdefULL), &queue, 0, c.payload,
                            absl::FromUnixMicros(1'700'000'000'000'000), c.key);
  task->priority = 7;
  if (c.extra) {
    TaskExtra& x = task->mutable_extra();
    x.headers = {{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}};
    x.not_before = absl::FromUnixMicros(1'700'000'100'000'000);
    x.expires_at = absl::FromUnixMicros(1'700'000'200'000'000);
    x.timeout = absl::Seconds(30);
    x.rate_key = "tenant-acme";
    x.concurrency_key = "db";
  }
  TaskLinks links;
  links.group = 0xfeedULL;
  links.index = 3;
  const TaskLinks* l = c.links ? &links : nullptr;

  const std::string record = EncodeSubmitted(*task, "a-type-name-longer-than-fifteen", l);
  absl::StatusOr<pb::JournalEntry> decoded = DecodeEntry(record);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_TRUE(decoded->has_submitted());

  pb::JournalEntry built;
  SubmittedToRecord(*task, "a-type-name-longer-than-fifteen", l, built.mutable_submitted());
  // Same message: serialized again, both come out in field order.
  EXPECT_EQ(decoded->SerializeAsString(), built.SerializeAsString());
  EXPECT_EQ(decoded->submitted().payload(), c.payload);
  EXPECT_EQ(decoded->submitted().idempotency_key(), c.key);
  EXPECT_EQ(decoded->submitted().id(), 0x0123456789abcdefULL);
  EXPECT_EQ(decoded->submitted().priority(), 7u);
  EXPECT_EQ(decoded->submitted().group_index(), c.links ? 3u : 0u);
  Task::Destroy(task);
}

std::string Binary(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + 7);
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Payloads, SubmitCodecTest,
    ::testing::Values(
        Case{"Empty", "", ""},
        Case{"Short", "hi", ""},
        Case{"LibraryKey", std::string(64, 'p'), "00112233445566778899aabbccddeeff"},
        Case{"FreeFormKey", "x", "an idempotency key that is not 32 hex digits"},
        // 127/128 bytes: the length varint grows from one byte to two.
        Case{"Length127", std::string(127, 'a'), ""},
        Case{"Length128", std::string(128, 'b'), std::string(300, 'k')},
        Case{"BinaryMiB", Binary(1 << 20), "00112233445566778899aabbccddeeff", true, true},
        Case{"WithExtraAndLinks", Binary(64), "k", true, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace conveyor::server
