// HandlerContext and the text helpers behind what it sends.
#include "worker/handler.h"

#include <vector>

#include "gtest/gtest.h"
#include "worker/text.h"

namespace conveyor::worker {
namespace {

TEST(HandlerContextTest, ExposesTheTask) {
  TaskInfo t;
  t.id = "00000000000000ab";
  t.payload = "p";
  t.headers["traceparent"] = "tp";
  t.attempt = 3;
  t.token = 9;
  Cancellation cancel;
  HandlerContext ctx(t, &cancel, {});
  EXPECT_EQ(ctx.task_id(), "00000000000000ab");
  EXPECT_EQ(ctx.payload(), "p");
  EXPECT_EQ(ctx.header("traceparent"), "tp");
  EXPECT_EQ(ctx.header("missing"), "");
  EXPECT_EQ(ctx.attempt(), 3u);
  EXPECT_EQ(ctx.fencing_token(), 9u);
  EXPECT_FALSE(ctx.cancelled());
  cancel.Cancel(CancelReason::kTimeout);
  EXPECT_TRUE(ctx.cancelled());
  EXPECT_EQ(ctx.cancel_reason(), CancelReason::kTimeout);
  ctx.ReportProgress(10, "no sink: dropped");  // must not crash
}

TEST(HandlerContextTest, ProgressIsClampedAndItsMessageBounded) {
  std::vector<std::pair<double, std::string>> seen;
  Cancellation cancel;
  const TaskInfo task;
  HandlerContext ctx(task, &cancel,
                     [&](double p, std::string m) { seen.emplace_back(p, std::move(m)); });
  ctx.ReportProgress(150, "over");
  ctx.ReportProgress(-5, "under");
  ctx.ReportProgress(42.5, std::string(5000, 'x'));
  ctx.ReportProgress(1, "bad \xc3 utf-8");
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].first, 100);
  EXPECT_EQ(seen[1].first, 0);
  EXPECT_EQ(seen[2].first, 42.5);
  EXPECT_EQ(seen[2].second.size(), 1024u);
  EXPECT_EQ(seen[3].second, "bad ? utf-8");
}

TEST(ValidUtf8Test, KeepsValidTextAndReplacesBadBytes) {
  EXPECT_EQ(ValidUtf8("plain", 100), "plain");
  EXPECT_EQ(ValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 100),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(ValidUtf8("a\xff" "b\xc0\xaf" "c", 100), "a?b??c");     // stray, overlong
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80", 100), "???");                  // surrogate
  EXPECT_EQ(ValidUtf8("\xe2\x82", 100), "??");                       // truncated
}

TEST(ValidUtf8Test, CutsAtACharacterBoundary) {
  EXPECT_EQ(ValidUtf8("abc", 2), "ab");
  EXPECT_EQ(ValidUtf8("a\xe2\x82\xac", 3), "a");  // the euro sign does not fit
  EXPECT_EQ(ValidUtf8("a\xe2\x82\xac", 4), "a\xe2\x82\xac");
}

}  // namespace
}  // namespace conveyor::worker
