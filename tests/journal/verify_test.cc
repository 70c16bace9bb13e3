// conveyord's offline tools (server/verify.h) on FakeEnv: --verify reports a
// sound directory, names the file and offset of damage, notes a torn tail,
// refuses what the broker's replay would refuse; --dump prints one JSON line
// per entry, snapshot entries first; --backup prints what it copied.
#include "server/verify.h"

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "conveyor/internal/journal.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/fake_env.h"
#include "server/journal/file_journal.h"
#include "server/journal/format.h"
#include "server/task.h"
#include "tests/journal/journal_test_util.h"

namespace conveyor::server {
namespace {

namespace pb = ::conveyor::internal;
using journal::FakeEnv;
using journal::FileJournal;
using journal::FileJournalOptions;
using journal::JoinPath;
using journal::testing::AppendAndWait;
using journal::testing::IsOk;
using journal::testing::RecoverAll;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

constexpr char kDir[] = "/data";

std::string Serialize(const pb::JournalEntry& e) {
  std::string out;
  e.SerializeToString(&out);
  return out;
}

std::string Started(uint32_t epoch) {
  pb::JournalEntry e;
  e.mutable_started()->set_epoch(epoch);
  return Serialize(e);
}

std::string Queue(const std::string& name) {
  pb::JournalEntry e;
  e.mutable_queue()->set_name(name);
  e.mutable_queue()->set_capacity(100);
  return Serialize(e);
}

std::string Submitted(uint64_t id, const std::string& queue, int64_t not_before_us = 0) {
  pb::JournalEntry e;
  pb::TaskSubmitted* s = e.mutable_submitted();
  s->set_id(id);
  s->set_queue(queue);
  s->set_type("echo");
  s->set_payload("payload");
  s->set_not_before_us(not_before_us);
  return Serialize(e);
}

std::string Updated(uint64_t id, TaskState state, bool cancel = false) {
  pb::JournalEntry e;
  e.mutable_updated()->set_id(id);
  e.mutable_updated()->set_state(static_cast<uint32_t>(state));
  e.mutable_updated()->set_cancel_requested(cancel);
  return Serialize(e);
}

std::string Dropped(uint64_t id) {
  pb::JournalEntry e;
  e.mutable_dropped()->add_ids(id);
  return Serialize(e);
}

// The broker's snapshot state: [u32 length][entry] pieces.
std::string SnapshotState(const std::vector<std::string>& entries) {
  std::string out;
  for (const std::string& e : entries) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
    out += e;
  }
  return out;
}

class VerifyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(env_.CreateDir("/"), IsOk()); }

  std::unique_ptr<FileJournal> Open() {
    FileJournalOptions o;
    o.dir = kDir;
    o.env = &env_;
    o.segment_bytes = 4096;
    auto j = FileJournal::Open(o);
    EXPECT_THAT(j, IsOk());
    EXPECT_THAT(RecoverAll(**j), IsOk());
    return *std::move(j);
  }

  // A journal: two queues, five tasks in several states, one dropped.
  void WriteHealthy(FileJournal& j) {
    ASSERT_THAT(AppendAndWait(j, {Started(1), Queue("a"), Queue("b")}), IsOk());
    ASSERT_THAT(AppendAndWait(j, {Submitted(1, "a")}), IsOk());
    ASSERT_THAT(AppendAndWait(j, {Submitted(2, "a"), Submitted(3, "b")}), IsOk());
    ASSERT_THAT(AppendAndWait(j, {Updated(1, TaskState::kSucceeded)}), IsOk());
    ASSERT_THAT(AppendAndWait(j, {Submitted(4, "b", int64_t{1} << 60)}), IsOk());  // far future
    ASSERT_THAT(AppendAndWait(j, {Submitted(5, "b"), Updated(5, TaskState::kDead)}), IsOk());
    ASSERT_THAT(AppendAndWait(j, {Submitted(6, "a"), Dropped(6)}), IsOk());
    ASSERT_THAT(AppendAndWait(j, {Updated(3, TaskState::kReady, /*cancel=*/true)}), IsOk());
  }

  VerifyReport Verify(std::vector<std::string>* dump = nullptr) {
    VerifyOptions o;
    o.env = &env_;
    o.read = {2, absl::ZeroDuration()};
    o.now = absl::FromUnixSeconds(1'700'000'000);
    if (dump != nullptr) o.dump = [dump](const std::string& line) { dump->push_back(line); };
    return VerifyDirectory(kDir, o);
  }

  std::string SegPath(uint64_t n) { return JoinPath(kDir, journal::SegmentFileName(n)); }

  FakeEnv env_;
};

TEST_F(VerifyTest, SoundDirectoryVerifiesWithASummary) {
  { auto j = Open(); WriteHealthy(*j); }
  VerifyReport r = Verify();
  ASSERT_THAT(r.status, IsOk());
  EXPECT_EQ(r.format_version, journal::kFormatVersion);
  EXPECT_FALSE(r.has_snapshot);
  EXPECT_EQ(r.segments, 1u);
  EXPECT_EQ(r.batches, 8u);
  EXPECT_EQ(r.records, 13u);
  EXPECT_EQ(r.first_seq, 1u);
  EXPECT_EQ(r.last_seq, 13u);
  EXPECT_EQ(r.epoch, 1u);
  EXPECT_EQ(r.queues, 2u);
  EXPECT_EQ(r.tasks, 5u);
  EXPECT_THAT(r.tasks_by_state,
              UnorderedElementsAre(Pair("READY", 1), Pair("SCHEDULED", 1), Pair("SUCCEEDED", 1),
                                   Pair("DEAD", 1), Pair("CANCELED", 1)));
  EXPECT_THAT(r.entries, UnorderedElementsAre(Pair("started", 1), Pair("queue", 2),
                                              Pair("submitted", 6), Pair("updated", 3),
                                              Pair("dropped", 1)));
  const std::string text = FormatVerifyReport(r);
  EXPECT_THAT(text, HasSubstr("segments: 1, batches: 8, records: 13 (seq 1..13)"));
  EXPECT_THAT(text, HasSubstr("queues 2, tasks 5 (SCHEDULED 1, READY 1, SUCCEEDED 1, DEAD 1, "
                              "CANCELED 1)"));
  EXPECT_THAT(text, HasSubstr("result: OK\n"));

  std::ostringstream out, err;
  EXPECT_EQ(RunVerify(kDir, false, out, err, &env_), 0);
  EXPECT_THAT(out.str(), HasSubstr("result: OK"));
  EXPECT_EQ(err.str(), "");
}

TEST_F(VerifyTest, SnapshotEntriesAreReplayedFirstAndRecordsBeforeTheCutSkipped) {
  {
    auto j = Open();
    WriteHealthy(*j);
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(cut, IsOk());
    // What the broker would write: its whole state as of the cut.
    ASSERT_THAT(j->WriteSnapshot(*cut, SnapshotState({Started(1), Queue("a"), Submitted(1, "a"),
                                                      Updated(1, TaskState::kSucceeded)})),
                IsOk());
    ASSERT_THAT(AppendAndWait(*j, {Submitted(7, "a")}), IsOk());
  }
  std::vector<std::string> dump;
  VerifyReport r = Verify(&dump);
  ASSERT_THAT(r.status, IsOk());
  EXPECT_TRUE(r.has_snapshot);
  EXPECT_EQ(r.snapshot_cut, 14u);
  EXPECT_EQ(r.snapshot_entries, 4u);
  EXPECT_EQ(r.records, 1u);
  EXPECT_EQ(r.tasks, 2u);
  ASSERT_THAT(dump, SizeIs(5));
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(dump[i], AllOf(StartsWith("{\"file\":\"/data/snapshot-00000000000000000014.snap\""),
                               HasSubstr("\"snapshot_cut\":14")));
  }
  EXPECT_THAT(dump[0], HasSubstr("\"offset\":28,"));
  EXPECT_THAT(dump[2], HasSubstr("\"entry\":{\"submitted\":{\"id\":\"1\",\"queue\":\"a\""));
  EXPECT_THAT(dump[4], AllOf(StartsWith(absl::StrCat("{\"file\":\"", SegPath(2), "\",\"offset\":32,"
                                                     "\"seq\":14,\"batch\":\"full\"")),
                             HasSubstr("\"id\":\"7\"")));
}

TEST_F(VerifyTest, DumpPrintsOneJsonLinePerRecordWithSeqAndBatch) {
  { auto j = Open(); WriteHealthy(*j); }
  std::ostringstream out, err;
  EXPECT_EQ(RunVerify(kDir, true, out, err, &env_), 0);
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_THAT(lines, SizeIs(13));
  EXPECT_THAT(lines[0], HasSubstr("\"offset\":32,\"seq\":1,\"batch\":\"first\""));
  EXPECT_THAT(lines[0], HasSubstr("\"entry\":{\"started\":{\"epoch\":1}}"));
  EXPECT_THAT(lines[2], HasSubstr("\"seq\":3,\"batch\":\"last\""));
  EXPECT_THAT(lines[3], HasSubstr("\"seq\":4,\"batch\":\"full\""));
  for (const std::string& line : lines) {
    EXPECT_THAT(line, AllOf(StartsWith("{\"file\":\"/data/00000000000000000001.log\""),
                            HasSubstr("}}")));
  }
  EXPECT_THAT(err.str(), HasSubstr("result: OK")) << "with --dump the summary goes to stderr";
}

TEST_F(VerifyTest, CorruptionGivesTheFileAndOffsetAndExit65) {
  { auto j = Open(); WriteHealthy(*j); }
  std::string data = *env_.Contents(SegPath(1));
  // The third batch (two records) starts after the first two batches.
  journal::SegmentScan scan = journal::ScanSegment(data, 0);
  const uint64_t offset = static_cast<uint64_t>(scan.records[4].data.data() - data.data()) -
                          journal::kRecordHeaderSize - journal::kSeqSize;
  data[offset + 12] ^= 0x20;
  env_.SetContents(SegPath(1), data);
  std::ostringstream out, err;
  EXPECT_EQ(RunVerify(kDir, false, out, err, &env_), 65);
  const std::string where = absl::StrCat(SegPath(1), " at offset ", offset);
  EXPECT_THAT(err.str(), AllOf(HasSubstr(where), HasSubstr("checksum")));
  EXPECT_THAT(out.str(), HasSubstr(absl::StrCat("result: DATA_LOSS: journal corruption in ", where)));
  EXPECT_THAT(out.str(), HasSubstr("records: 4 (seq 1..4)")) << "what came before is counted";
}

TEST_F(VerifyTest, TornTailVerifiesWithANote) {
  { auto j = Open(); WriteHealthy(*j); }
  std::string data = *env_.Contents(SegPath(1));
  journal::SegmentScan scan = journal::ScanSegment(data, 0);
  env_.SetContents(SegPath(1), data.substr(0, scan.end - 5));
  std::ostringstream out, err;
  EXPECT_EQ(RunVerify(kDir, false, out, err, &env_), 0);
  EXPECT_THAT(out.str(), AllOf(HasSubstr("note: /data/00000000000000000001.log ends in a torn "
                                         "write at offset"),
                               HasSubstr("records: 12 (seq 1..12)"), HasSubstr("result: OK")));
}

TEST_F(VerifyTest, ARecordThatIsNotAJournalEntryIsDataLossAtItsOffset) {
  {
    auto j = Open();
    ASSERT_THAT(AppendAndWait(*j, {Started(1)}), IsOk());
    ASSERT_THAT(AppendAndWait(*j, {std::string("\xff\xff\xff garbage", 11)}), IsOk());
  }
  const uint64_t offset = journal::kSegmentHeaderSize + journal::EncodedRecordSize(Started(1).size());
  VerifyReport r = Verify();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status.message()),
              HasSubstr(absl::StrCat(SegPath(1), " at offset ", offset,
                                     ": record 2 (11 bytes) is not a journal entry")));
}

TEST_F(VerifyTest, WhatTheBrokerWouldRefuseToReplayIsDataLoss) {
  {
    auto j = Open();
    ASSERT_THAT(AppendAndWait(*j, {Queue("a"), Submitted(1, "a")}), IsOk());
    // A queue never recorded (its record was in a failed write) is
    // recreated by the broker; a name no queue can have is not.
    ASSERT_THAT(AppendAndWait(*j, {Submitted(2, "nowhere")}), IsOk());
    ASSERT_THAT(AppendAndWait(*j, {Submitted(3, "no queue")}), IsOk());
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("names a malformed queue \"no queue\""));

  ASSERT_THAT(env_.RemoveFile(SegPath(1)), IsOk());
  {
    auto j = Open();
    ASSERT_THAT(AppendAndWait(*j, {Queue("a"), Submitted(1, "a")}), IsOk());
    ASSERT_THAT(AppendAndWait(*j, {Updated(1, TaskState::kRunning)}), IsOk());
  }
  r = Verify();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("has state 2"));
}

TEST_F(VerifyTest, MissingOrForeignDirectoryExits66) {
  std::ostringstream out, err;
  EXPECT_EQ(RunVerify("/nope", false, out, err, &env_), 66);
  EXPECT_THAT(err.str(), HasSubstr("/nope does not exist"));
  ASSERT_THAT(env_.CreateDir("/empty"), IsOk());
  EXPECT_EQ(RunVerify("/empty", false, out, err, &env_), 66);
}

TEST_F(VerifyTest, BackupPrintsWhatItCopiedAndRefusesANonEmptyDestination) {
  {
    auto j = Open();
    WriteHealthy(*j);
    std::ostringstream out, err;
    ASSERT_EQ(RunBackup(kDir, "/copy", out, err, &env_), 0) << err.str();
    EXPECT_THAT(out.str(), AllOf(HasSubstr("backup of /data to /copy:"),
                                 HasSubstr("00000000000000000001.log"),
                                 HasSubstr("segment, first_seq 1, 13 records (seq 1..13)"),
                                 HasSubstr("FORMAT"), HasSubstr("copied 2 files")));
    EXPECT_EQ(RunBackup(kDir, "/copy", out, err, &env_), 73);
    EXPECT_THAT(err.str(), HasSubstr("/copy is not empty"));
    EXPECT_EQ(RunBackup(kDir, "/no/such/copy", out, err, &env_), 73);
    EXPECT_THAT(err.str(), HasSubstr("/no/such does not exist"));
    EXPECT_EQ(RunBackup("/nothing", "/copy2", out, err, &env_), 66);
  }
  VerifyOptions o;
  o.env = &env_;
  VerifyReport copy = VerifyDirectory("/copy", o);
  ASSERT_THAT(copy.status, IsOk());
  EXPECT_EQ(copy.records, 13u);
  EXPECT_EQ(copy.tasks, 5u);
}

}  // namespace
}  // namespace conveyor::server
