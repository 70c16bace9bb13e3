// Recurring schedules in the broker core (server/schedule.cc): one task per
// tick on a fake clock, pause/resume, refused ticks, validation, and exactly
// one task per tick across restarts with the real file journal (including
// the misfire policies for ticks missed while the broker was down).
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/journal/file_journal.h"
#include "tests/server/broker_test_util.h"
#include "tests/server/durability_fixtures.h"

namespace conveyor::server {
namespace {

using broker_test::BrokerTest;
using broker_test::IsOk;
using broker_test::StatusIs;

// FakeClock starts at 2023-11-14 22:13:20 UTC: the next minute tick is 40 s away.
constexpr absl::Duration kToFirstMinute = absl::Seconds(40);

ScheduleSpec Every(std::string name, std::string cron, std::string queue = "cron-q") {
  ScheduleSpec spec;
  spec.name = std::move(name);
  spec.cron = std::move(cron);
  spec.task.queue = std::move(queue);
  spec.task.type = "tick";
  spec.task.payload = "p";
  return spec;
}

class BrokerScheduleTest : public BrokerTest {
 protected:
  size_t Ready(const std::string& queue) {
    absl::StatusOr<QueueInfo> q = broker_->GetQueue(queue);
    return q.ok() ? q->stats.count(TaskState::kReady) : 0;
  }
};

TEST_F(BrokerScheduleTest, SubmitsOneTaskPerTickWithItsTemplate) {
  absl::StatusOr<ScheduleInfo> s = broker_->CreateSchedule(Every("minutely", "* * * * *"));
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(s->next_run_at, Now() + kToFirstMinute);
  EXPECT_EQ(Ready("cron-q"), 0u);
  AdvanceAndTick(kToFirstMinute - absl::Seconds(1));
  EXPECT_EQ(Ready("cron-q"), 0u) << "nothing before the tick";
  AdvanceAndTick(absl::Seconds(1));
  EXPECT_EQ(Ready("cron-q"), 1u);
  AdvanceAndTick(absl::Seconds(59));
  EXPECT_EQ(Ready("cron-q"), 1u);
  AdvanceAndTick(absl::Seconds(1));
  EXPECT_EQ(Ready("cron-q"), 2u);
  // A late Tick() (the clock jumped over several ticks) runs the due tick
  // once; the ticks that passed meanwhile are missed, not run as a backlog.
  AdvanceAndTick(absl::Minutes(5));
  EXPECT_EQ(Ready("cron-q"), 3u);

  absl::StatusOr<ScheduleInfo> info = broker_->GetSchedule("minutely");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->runs, 3u);
  EXPECT_EQ(info->missed, 4u);
  LeasedTask t = LeaseOne("cron-q");
  EXPECT_EQ(t.type, "tick");
  EXPECT_EQ(t.payload, "p");
  absl::StatusOr<TaskInfo> task = broker_->GetTask(t.id);
  ASSERT_THAT(task, IsOk());
  EXPECT_EQ(task->schedule, "minutely");
}

TEST_F(BrokerScheduleTest, PausedTicksAreSkippedNotMissedAndResumeRunsTheNextTick) {
  ASSERT_THAT(broker_->CreateSchedule(Every("s", "* * * * *")), IsOk());
  ASSERT_THAT(broker_->PauseSchedule("s"), IsOk());
  absl::StatusOr<ScheduleInfo> paused = broker_->GetSchedule("s");
  ASSERT_THAT(paused, IsOk());
  EXPECT_TRUE(paused->spec.paused);
  EXPECT_EQ(paused->next_run_at, absl::InfiniteFuture());
  AdvanceAndTick(absl::Minutes(3));
  EXPECT_EQ(Ready("cron-q"), 0u);
  absl::StatusOr<ScheduleInfo> resumed = broker_->ResumeSchedule("s");
  ASSERT_THAT(resumed, IsOk());
  EXPECT_EQ(resumed->missed, 0u);
  EXPECT_GT(resumed->next_run_at, Now());
  AdvanceAndTick(absl::Minutes(1));
  EXPECT_EQ(Ready("cron-q"), 1u);
}

TEST_F(BrokerScheduleTest, AFullQueueRefusesTheTickAndCountsItMissed) {
  QueueConfig c = Config("small");
  c.capacity = 1;
  MustCreateQueue(c);
  ASSERT_THAT(broker_->CreateSchedule(Every("s", "* * * * *", "small")), IsOk());
  AdvanceAndTick(kToFirstMinute);
  AdvanceAndTick(absl::Minutes(1));
  absl::StatusOr<ScheduleInfo> info = broker_->GetSchedule("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->runs, 1u);
  EXPECT_EQ(info->missed, 1u);
  EXPECT_THAT(info->last_error, testing::HasSubstr("is full"));
  EXPECT_EQ(Ready("small"), 1u);
}

TEST_F(BrokerScheduleTest, DeleteStopsTicksAndKeepsSubmittedTasks) {
  ASSERT_THAT(broker_->CreateSchedule(Every("s", "* * * * *")), IsOk());
  AdvanceAndTick(kToFirstMinute);
  ASSERT_THAT(broker_->DeleteSchedule("s"), IsOk());
  AdvanceAndTick(absl::Minutes(3));
  EXPECT_EQ(Ready("cron-q"), 1u);
  EXPECT_THAT(broker_->GetSchedule("s"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->DeleteSchedule("s"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BrokerScheduleTest, RejectsBadSchedulesNamingTheProblem) {
  EXPECT_THAT(broker_->CreateSchedule(Every("s", "61 * * * *")),
              StatusIs(absl::StatusCode::kInvalidArgument, "minute"));
  ScheduleSpec tz = Every("s", "* * * * *");
  tz.time_zone = "Mars/Base";
  EXPECT_THAT(broker_->CreateSchedule(tz),
              StatusIs(absl::StatusCode::kInvalidArgument, "Mars/Base"));
  EXPECT_THAT(broker_->CreateSchedule(Every("bad name", "* * * * *")),
              StatusIs(absl::StatusCode::kInvalidArgument, "name"));
  ScheduleSpec idem = Every("s", "* * * * *");
  idem.task.idempotency_key = "k";
  EXPECT_THAT(broker_->CreateSchedule(idem),
              StatusIs(absl::StatusCode::kInvalidArgument, "task.idempotency_key"));
  ScheduleSpec no_type = Every("s", "* * * * *");
  no_type.task.type = "";
  EXPECT_THAT(broker_->CreateSchedule(no_type),
              StatusIs(absl::StatusCode::kInvalidArgument, "task.type"));
  ASSERT_THAT(broker_->CreateSchedule(Every("s", "@hourly")), IsOk());
  EXPECT_THAT(broker_->CreateSchedule(Every("s", "@daily")),
              StatusIs(absl::StatusCode::kAlreadyExists));
  BrokerOptions few;
  few.max_schedules = 1;
  Reset(few);
  ASSERT_THAT(broker_->CreateSchedule(Every("a", "@hourly")), IsOk());
  EXPECT_THAT(broker_->CreateSchedule(Every("b", "@hourly")),
              StatusIs(absl::StatusCode::kResourceExhausted, "--max-schedules"));
}

TEST_F(BrokerScheduleTest, ListsByNameWithTheirZoneAndNextRun) {
  ScheduleSpec paris = Every("b-paris", "30 8 * * MON-FRI");
  paris.time_zone = "Europe/Paris";
  ASSERT_THAT(broker_->CreateSchedule(paris), IsOk());
  ASSERT_THAT(broker_->CreateSchedule(Every("a-hourly", "@hourly")), IsOk());
  std::vector<ScheduleInfo> all = broker_->ListSchedules();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].spec.name, "a-hourly");
  EXPECT_EQ(all[1].spec.name, "b-paris");
  // 2023-11-15 is a Wednesday; 08:30 in Paris (UTC+1 in November) is 07:30 UTC.
  EXPECT_EQ(all[1].next_run_at, absl::FromUnixSeconds(1'700'033'400));
}

// ── across restarts (the real file journal) ──

class ScheduleRestartTest : public durability_test::RestartTest {
 protected:
  // Tasks the schedule submitted so far (all of them stay READY here).
  size_t Submitted() {
    absl::StatusOr<QueueInfo> q = broker_->GetQueue("cron-q");
    return q.ok() ? q->stats.count(TaskState::kReady) + q->stats.count(TaskState::kScheduled)
                  : 0;
  }
  void AdvanceAndTick(absl::Duration d) {
    clock_.Advance(d);
    broker_->Tick();
  }

};

TEST_F(ScheduleRestartTest, ARestartNeverRunsATickTwice) {
  Open();
  ASSERT_THAT(broker_->CreateSchedule(Every("s", "* * * * *")), IsOk());
  AdvanceAndTick(kToFirstMinute);
  AdvanceAndTick(absl::Minutes(1));
  ASSERT_EQ(Submitted(), 2u);
  // Restart within the same minute: the two ticks are not run again.
  clock_.Advance(absl::Seconds(10));
  Open();
  broker_->Tick();
  EXPECT_EQ(Submitted(), 2u);
  absl::StatusOr<ScheduleInfo> info = broker_->GetSchedule("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->runs, 2u);
  EXPECT_EQ(info->missed, 0u);
  // And the next tick runs once after the restart.
  AdvanceAndTick(absl::Seconds(50));
  EXPECT_EQ(Submitted(), 3u);
  // A snapshot, then a restart: still exactly what ran.
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Open();
  broker_->Tick();
  EXPECT_EQ(Submitted(), 3u);
  info = broker_->GetSchedule("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->runs, 3u);
}

TEST_F(ScheduleRestartTest, TicksMissedWhileDownAreSkippedByDefault) {
  Open();
  ASSERT_THAT(broker_->CreateSchedule(Every("s", "* * * * *")), IsOk());
  AdvanceAndTick(kToFirstMinute);
  ASSERT_EQ(Submitted(), 1u);
  Stop();  // down for 10 minutes
  clock_.Advance(absl::Minutes(10));
  Open();
  broker_->Tick();
  EXPECT_EQ(Submitted(), 1u);
  absl::StatusOr<ScheduleInfo> info = broker_->GetSchedule("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->missed, 10u);
  EXPECT_THAT(info->last_error, testing::HasSubstr("skip"));
  AdvanceAndTick(absl::Minutes(1));
  EXPECT_EQ(Submitted(), 2u);
}

TEST_F(ScheduleRestartTest, RunOnceCatchesUpWithOneTaskForTheLatestMissedTick) {
  Open();
  ScheduleSpec spec = Every("s", "* * * * *");
  spec.misfire = MisfirePolicy::kRunOnce;
  ASSERT_THAT(broker_->CreateSchedule(spec), IsOk());
  AdvanceAndTick(kToFirstMinute);
  ASSERT_EQ(Submitted(), 1u);
  Stop();
  clock_.Advance(absl::Minutes(10) + absl::Seconds(30));
  Open();
  EXPECT_EQ(Submitted(), 2u) << "one catch-up task at start";
  absl::StatusOr<ScheduleInfo> info = broker_->GetSchedule("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->runs, 2u);
  EXPECT_EQ(info->missed, 9u);
  // Restarting again right away does not catch up twice.
  Open();
  EXPECT_EQ(Submitted(), 2u);
}

TEST_F(ScheduleRestartTest, DeletedAndPausedSchedulesStaySoAfterARestart) {
  Open();
  ASSERT_THAT(broker_->CreateSchedule(Every("gone", "* * * * *")), IsOk());
  ASSERT_THAT(broker_->CreateSchedule(Every("held", "* * * * *")), IsOk());
  ASSERT_THAT(broker_->DeleteSchedule("gone"), IsOk());
  ASSERT_THAT(broker_->PauseSchedule("held"), IsOk());
  Open();
  EXPECT_THAT(broker_->GetSchedule("gone"), StatusIs(absl::StatusCode::kNotFound));
  absl::StatusOr<ScheduleInfo> held = broker_->GetSchedule("held");
  ASSERT_THAT(held, IsOk());
  EXPECT_TRUE(held->spec.paused);
  AdvanceAndTick(absl::Minutes(5));
  EXPECT_EQ(Submitted(), 0u);
}

}  // namespace
}  // namespace conveyor::server
