// The fake's crash model, which the journal's crash tests rely on.
#include "server/journal/fake_env.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/journal/journal_test_util.h"

namespace conveyor::server::journal {
namespace {

using ::conveyor::server::journal::testing::IsOk;
using ::conveyor::server::journal::testing::StatusIs;
using ::testing::ElementsAre;

class FakeEnvTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(env_.CreateDir("/d"), IsOk()); }
  FakeEnv env_;
};

TEST_F(FakeEnvTest, CrashKeepsOnlySyncedBytesOfDirSyncedFiles) {
  auto f = env_.NewWritableFile("/d/a");
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append("hello"), IsOk());
  ASSERT_THAT((*f)->DataSync(), IsOk());
  ASSERT_THAT(env_.SyncDir("/d"), IsOk());
  ASSERT_THAT((*f)->Append(" world"), IsOk());
  auto g = env_.NewWritableFile("/d/b");  // never dir-synced
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT((*g)->Append("x"), IsOk());
  ASSERT_THAT((*g)->Sync(), IsOk());

  env_.Crash();
  EXPECT_EQ(*env_.Contents("/d/a"), "hello");
  EXPECT_FALSE(env_.FileExists("/d/b"));
  // Handles from before the crash are dead.
  EXPECT_THAT((*f)->Append("!"), StatusIs(absl::StatusCode::kInternal, "errno 5"));
}

TEST_F(FakeEnvTest, CrashCanKeepATornPrefixOfUnsyncedBytes) {
  auto f = env_.NewWritableFile("/d/a");
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append("base"), IsOk());
  ASSERT_THAT((*f)->Sync(), IsOk());
  ASSERT_THAT(env_.SyncDir("/d"), IsOk());
  ASSERT_THAT((*f)->Append("12345"), IsOk());
  ASSERT_THAT((*f)->Append("67890"), IsOk());
  env_.Crash(7);
  EXPECT_EQ(*env_.Contents("/d/a"), "base1234567");
}

TEST_F(FakeEnvTest, RenameAndRemoveAreUndoneWithoutDirSync) {
  env_.SetContents("/d/a", "A");
  ASSERT_THAT(env_.RenameFile("/d/a", "/d/b"), IsOk());
  env_.Crash();
  EXPECT_TRUE(env_.FileExists("/d/a"));
  EXPECT_FALSE(env_.FileExists("/d/b"));
  ASSERT_THAT(env_.RemoveFile("/d/a"), IsOk());
  ASSERT_THAT(env_.SyncDir("/d"), IsOk());
  env_.Crash();
  EXPECT_FALSE(env_.FileExists("/d/a"));
}

TEST_F(FakeEnvTest, PreallocateZeroFillsAndWritesGoAtTheOffset) {
  auto f = env_.NewWritableFile("/d/a");
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Preallocate(8), IsOk());
  ASSERT_THAT((*f)->Append("ab"), IsOk());
  EXPECT_EQ(*env_.Contents("/d/a"), std::string("ab\0\0\0\0\0\0", 8));
  env_.SetNoSpace(true);
  EXPECT_THAT((*f)->Preallocate(16), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(env_.NewWritableFile("/d/c"),
              StatusIs(absl::StatusCode::kResourceExhausted, "errno 28"));
}

TEST_F(FakeEnvTest, LocksExcludeAndDieWithTheCrash) {
  auto l1 = env_.LockFile("/d/LOCK");
  ASSERT_THAT(l1, IsOk());
  EXPECT_THAT(env_.LockFile("/d/LOCK"), StatusIs(absl::StatusCode::kFailedPrecondition));
  env_.Crash();
  auto l2 = env_.LockFile("/d/LOCK");
  ASSERT_THAT(l2, IsOk());
  l1->reset();  // The dead lock's release must not free the new one.
  EXPECT_THAT(env_.LockFile("/d/LOCK"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(FakeEnvTest, ListDirShowsDirectChildren) {
  env_.SetContents("/d/x", "");
  env_.SetContents("/d/y", "");
  auto names = env_.ListDir("/d");
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, ElementsAre("x", "y"));
}

}  // namespace
}  // namespace conveyor::server::journal
