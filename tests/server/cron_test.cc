// Cron schedules (server/cron.h): every syntax form and each error message,
// Next across minute/hour/day/month/year boundaries, leap years, the
// day-of-month/day-of-week OR rule, macros, steps; DST in Europe/Paris,
// America/New_York and Australia/Lord_Howe (half-hour shifts); LastBetween
// over long gaps; and seeded cross-checks of Next and LastBetween against a
// minute-by-minute search with its own reading of the fields.
//
// Real zones come from the system's zoneinfo (tzdata). A zone that cannot be
// loaded fails the test: it is never skipped.
#include "server/cron.h"

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace conveyor::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A schedule that must parse; a failure is reported and the never-ticking
// schedule returned, so the test fails rather than crashes.
CronSchedule Parsed(absl::string_view expr, absl::string_view tz = "") {
  absl::StatusOr<CronSchedule> s = CronSchedule::Parse(expr, tz);
  if (!s.ok()) {
    ADD_FAILURE() << "Parse(\"" << expr << "\", \"" << tz << "\"): " << s.status();
    return *CronSchedule::Parse("0 0 30 2 *", "");
  }
  return *std::move(s);
}

absl::TimeZone Zone(absl::string_view name) {
  absl::TimeZone tz;
  if (name.empty() || name == "UTC") return absl::UTCTimeZone();
  if (!absl::LoadTimeZone(std::string(name), &tz)) {
    ADD_FAILURE() << "cannot load time zone " << name
                  << " (is the tzdata package installed?)";
  }
  return tz;
}

absl::Time At(absl::TimeZone tz, int y, int mo, int d, int h, int mi, int s = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), tz);
}
absl::Time Utc(int y, int mo, int d, int h, int mi, int s = 0) {
  return At(absl::UTCTimeZone(), y, mo, d, h, mi, s);
}

std::string Show(absl::Time t, absl::TimeZone tz) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", t, tz);
}

// The first `n` ticks after `start`, in the schedule's zone.
std::vector<std::string> Ticks(absl::string_view expr, absl::Time start, int n,
                               absl::string_view tz_name = "") {
  const CronSchedule s = Parsed(expr, tz_name);
  const absl::TimeZone tz = Zone(tz_name);
  std::vector<std::string> out;
  absl::Time t = start;
  for (int i = 0; i < n; ++i) {
    t = s.Next(t);
    out.push_back(Show(t, tz));
    if (t == absl::InfiniteFuture()) break;
  }
  return out;
}

// ── Parse: syntax ──

TEST(CronParseTest, ZoneinfoIsInstalled) {
  EXPECT_TRUE(std::filesystem::exists("/usr/share/zoneinfo/Europe/Paris"))
      << "install the tzdata package: cron schedules read IANA zones from it";
}

TEST(CronParseTest, StarMatchesEveryMinute) {
  EXPECT_THAT(Ticks("* * * * *", Utc(2024, 1, 1, 10, 0, 30), 3),
              ElementsAre("2024-01-01 10:01:00 UTC", "2024-01-01 10:02:00 UTC",
                          "2024-01-01 10:03:00 UTC"));
}

TEST(CronParseTest, ListsRangesAndSteps) {
  const absl::Time t = Utc(2024, 1, 1, 10, 0);
  EXPECT_THAT(Ticks("1,5 * * * *", t, 3),
              ElementsAre("2024-01-01 10:01:00 UTC", "2024-01-01 10:05:00 UTC",
                          "2024-01-01 11:01:00 UTC"));
  EXPECT_THAT(Ticks("1-3 * * * *", t, 4),
              ElementsAre("2024-01-01 10:01:00 UTC", "2024-01-01 10:02:00 UTC",
                          "2024-01-01 10:03:00 UTC", "2024-01-01 11:01:00 UTC"));
  EXPECT_THAT(Ticks("*/15 * * * *", t, 4),
              ElementsAre("2024-01-01 10:15:00 UTC", "2024-01-01 10:30:00 UTC",
                          "2024-01-01 10:45:00 UTC", "2024-01-01 11:00:00 UTC"));
  EXPECT_THAT(Ticks("10-50/10 * * * *", t, 6),
              ElementsAre("2024-01-01 10:10:00 UTC", "2024-01-01 10:20:00 UTC",
                          "2024-01-01 10:30:00 UTC", "2024-01-01 10:40:00 UTC",
                          "2024-01-01 10:50:00 UTC", "2024-01-01 11:10:00 UTC"));
  // start/step runs to the end of the field.
  EXPECT_THAT(Ticks("5/15 * * * *", t, 5),
              ElementsAre("2024-01-01 10:05:00 UTC", "2024-01-01 10:20:00 UTC",
                          "2024-01-01 10:35:00 UTC", "2024-01-01 10:50:00 UTC",
                          "2024-01-01 11:05:00 UTC"));
  // Items of every kind in one list.
  EXPECT_THAT(Ticks("0 1,3-4,20/2 * * *", t, 7),
              ElementsAre("2024-01-01 20:00:00 UTC", "2024-01-01 22:00:00 UTC",
                          "2024-01-02 01:00:00 UTC", "2024-01-02 03:00:00 UTC",
                          "2024-01-02 04:00:00 UTC", "2024-01-02 20:00:00 UTC",
                          "2024-01-02 22:00:00 UTC"));
}

TEST(CronParseTest, MonthAndWeekdayNamesInAnyCase) {
  EXPECT_THAT(Ticks("0 0 1 jan,Jul *", Utc(2024, 1, 1, 0, 0), 3),
              ElementsAre("2024-07-01 00:00:00 UTC", "2025-01-01 00:00:00 UTC",
                          "2025-07-01 00:00:00 UTC"));
  EXPECT_THAT(Ticks("0 0 1 JAN-DEC/3 *", Utc(2024, 1, 1, 0, 0), 4),
              ElementsAre("2024-04-01 00:00:00 UTC", "2024-07-01 00:00:00 UTC",
                          "2024-10-01 00:00:00 UTC", "2025-01-01 00:00:00 UTC"));
  // 2024-01-05 is a Friday.
  EXPECT_THAT(Ticks("0 9 * * mon-FRI", Utc(2024, 1, 5, 10, 0), 3),
              ElementsAre("2024-01-08 09:00:00 UTC", "2024-01-09 09:00:00 UTC",
                          "2024-01-10 09:00:00 UTC"));
  EXPECT_THAT(Ticks("0 9 * * Sun,wed", Utc(2024, 1, 5, 10, 0), 3),
              ElementsAre("2024-01-07 09:00:00 UTC", "2024-01-10 09:00:00 UTC",
                          "2024-01-14 09:00:00 UTC"));
}

TEST(CronParseTest, BothZeroAndSevenAreSunday) {
  const absl::Time t = Utc(2024, 1, 1, 0, 0);  // a Monday
  const std::vector<std::string> sundays = {"2024-01-07 00:00:00 UTC",
                                            "2024-01-14 00:00:00 UTC"};
  EXPECT_EQ(Ticks("0 0 * * 0", t, 2), sundays);
  EXPECT_EQ(Ticks("0 0 * * 7", t, 2), sundays);
  EXPECT_EQ(Ticks("0 0 * * SUN", t, 2), sundays);
  EXPECT_THAT(Ticks("0 0 * * 5-7", t, 4),
              ElementsAre("2024-01-05 00:00:00 UTC", "2024-01-06 00:00:00 UTC",
                          "2024-01-07 00:00:00 UTC", "2024-01-12 00:00:00 UTC"));
}

TEST(CronParseTest, FieldsMaySeparateBySpacesAndTabs) {
  EXPECT_EQ(Ticks("  0\t12   * *  *  ", Utc(2024, 1, 1, 0, 0), 2),
            Ticks("0 12 * * *", Utc(2024, 1, 1, 0, 0), 2));
}

TEST(CronParseTest, MacrosEqualTheirExpansions) {
  const absl::Time t = Utc(2024, 1, 1, 0, 0);
  const struct {
    const char* macro;
    const char* expansion;
  } cases[] = {
      {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
      {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"},  {"@DAILY", "0 0 * * *"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(Ticks(c.macro, t, 4), Ticks(c.expansion, t, 4)) << c.macro;
  }
  EXPECT_THAT(Ticks("@weekly", t, 2),
              ElementsAre("2024-01-07 00:00:00 UTC", "2024-01-14 00:00:00 UTC"));
}

TEST(CronParseTest, KeepsTheTextItWasGiven) {
  const CronSchedule s = Parsed("@daily", "Europe/Paris");
  EXPECT_EQ(s.expr(), "@daily");
  EXPECT_EQ(s.time_zone(), "Europe/Paris");
  const CronSchedule u = Parsed("*/5 * * * *", "");
  EXPECT_EQ(u.expr(), "*/5 * * * *");
  EXPECT_EQ(u.time_zone(), "");
}

TEST(CronParseTest, AcceptsExpressionsUpTo256Characters) {
  std::string expr = "0 0 * * *";
  expr.append(CronSchedule::kMaxExprLength - expr.size(), ' ');
  ASSERT_EQ(expr.size(), 256u);
  EXPECT_TRUE(CronSchedule::Parse(expr, "").ok());
  expr.push_back(' ');
  absl::Status status = CronSchedule::Parse(expr, "").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "cron expression is 257 characters long; the limit is 256");
}

// ── Parse: errors ──

TEST(CronParseTest, RejectsBadExpressionsNamingFieldAndValue) {
  const struct {
    const char* expr;
    const char* message;
  } cases[] = {
      {"", "cron expression \"\" has 0 fields; want 5"},
      {"   ", "has 0 fields; want 5"},
      {"* * * *", "cron expression \"* * * *\" has 4 fields; want 5 (minute hour "
                  "day-of-month month day-of-week) or a macro such as @daily"},
      {"* * * * * *", "has 6 fields; want 5"},
      {"60 * * * *", "cron field \"minute\": 60 is out of range 0-59"},
      {"* 25 * * *", "cron field \"hour\": 25 is out of range 0-23"},
      {"* * 0 * *", "cron field \"day-of-month\": 0 is out of range 1-31"},
      {"* * 32 * *", "cron field \"day-of-month\": 32 is out of range 1-31"},
      {"* * * 0 *", "cron field \"month\": 0 is out of range 1-12"},
      {"* * * 13 *", "cron field \"month\": 13 is out of range 1-12"},
      {"* * * * 8", "cron field \"day-of-week\": 8 is out of range 0-7"},
      {"99999999999 * * * *", "cron field \"minute\": 99999999999 is out of range 0-59"},
      {"1-61 * * * *", "cron field \"minute\": 61 is out of range 0-59"},
      {"1,,2 * * * *", "cron field \"minute\": empty item in list \"1,,2\""},
      {"* 1, * * *", "cron field \"hour\": empty item in list \"1,\""},
      {", * * * *", "cron field \"minute\": empty item in list \",\""},
      {"5-1 * * * *", "cron field \"minute\": range \"5-1\" is reversed (5 > 1)"},
      {"* * * * SAT-SUN", "cron field \"day-of-week\": range \"SAT-SUN\" is reversed (6 > 0)"},
      {"* * * DEC-JAN *", "cron field \"month\": range \"DEC-JAN\" is reversed (12 > 1)"},
      {"*/0 * * * *", "cron field \"minute\": step 0 is out of range 1-59"},
      {"* 1-5/0 * * *", "cron field \"hour\": step 0 is out of range 1-23"},
      {"*/60 * * * *", "cron field \"minute\": step 60 is out of range 1-59"},
      {"*/ * * * *", "cron field \"minute\": item \"*/\" has an empty step"},
      {"*/x * * * *", "cron field \"minute\": step \"x\" is not a number"},
      {"1/2/3 * * * *", "cron field \"minute\": item \"1/2/3\" has more than one '/'"},
      {"1- * * * *", "cron field \"minute\": item \"1-\" has an empty value"},
      {"-1 * * * *", "cron field \"minute\": item \"-1\" has an empty value"},
      {"/5 * * * *", "cron field \"minute\": item \"/5\" has an empty value"},
      {"a * * * *", "cron field \"minute\": \"a\" is not a number"},
      {"1;2 * * * *", "cron field \"minute\": \"1;2\" is not a number"},
      {"1.5 * * * *", "cron field \"minute\": \"1.5\" is not a number"},
      {"+5 * * * *", "cron field \"minute\": \"+5\" is not a number"},
      {"** * * * *", "cron field \"minute\": \"**\" is not a number"},
      {"*-5 * * * *", "cron field \"minute\": \"*\" is not a number"},
      {"* MON * * *", "cron field \"hour\": \"MON\" is not a number"},
      {"0\n0 * * * *", "cron field \"minute\": \"0\\n0\" is not a number"},
      {"* * * FOO *",
       "cron field \"month\": \"FOO\" is not a number or a month name (JAN-DEC)"},
      {"* * * JANUARY *",
       "cron field \"month\": \"JANUARY\" is not a number or a month name (JAN-DEC)"},
      {"* * * * FUNDAY",
       "cron field \"day-of-week\": \"FUNDAY\" is not a number or a weekday name "
       "(SUN-SAT)"},
      {"* * * * MON-FRI/x", "cron field \"day-of-week\": step \"x\" is not a number"},
      {"@reboot", "unknown cron macro \"@reboot\"; want @yearly, @annually, @monthly, "
                  "@weekly, @daily, @midnight or @hourly"},
      {"@daily 0", "unknown cron macro \"@daily 0\""},
      {"@", "unknown cron macro \"@\""},
  };
  for (const auto& c : cases) {
    absl::Status status = CronSchedule::Parse(c.expr, "").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expr;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.expr;
  }
}

TEST(CronParseTest, RejectsUnknownTimeZonesAndPaths) {
  const char* names[] = {"Mars/Base",     "Europe/Pariss",  "/etc/passwd",
                         "../../../etc/passwd", "Europe/../UTC", "file:/usr/share/zoneinfo/UTC",
                         "Europe/Paris ", " UTC"};
  for (const char* name : names) {
    absl::Status status = CronSchedule::Parse("* * * * *", name).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(status.message(), absl::StrCat("unknown time zone \"", name, "\""));
  }
  absl::Status status = CronSchedule::Parse("* * * * *", "Mars/Base").status();
  EXPECT_EQ(status.message(), "unknown time zone \"Mars/Base\"");
  // A bad expression is reported before the zone.
  status = CronSchedule::Parse("* 25 * * *", "Mars/Base").status();
  EXPECT_THAT(status.message(), HasSubstr("\"hour\": 25"));
}

TEST(CronParseTest, LoadsIanaZones) {
  for (const char* name : {"", "UTC", "Etc/UTC", "Europe/Paris", "America/New_York",
                           "America/Argentina/Buenos_Aires", "Etc/GMT+5",
                           "America/Port-au-Prince", "Australia/Lord_Howe"}) {
    absl::StatusOr<CronSchedule> s = CronSchedule::Parse("0 9 * * *", name);
    EXPECT_TRUE(s.ok()) << name << ": " << s.status();
  }
  // Etc/GMT+5 is five hours behind UTC (POSIX sign).
  EXPECT_EQ(Parsed("0 9 * * *", "Etc/GMT+5").Next(Utc(2024, 1, 1, 0, 0)),
            Utc(2024, 1, 1, 14, 0));
}

// ── Next ──

TEST(CronNextTest, IsStrictlyAfterAndOnWholeMinutes) {
  const CronSchedule s = Parsed("30 10 * * *");
  EXPECT_EQ(s.Next(Utc(2024, 1, 1, 10, 30)), Utc(2024, 1, 2, 10, 30));
  EXPECT_EQ(s.Next(Utc(2024, 1, 1, 10, 30) - absl::Nanoseconds(1)),
            Utc(2024, 1, 1, 10, 30));
  EXPECT_EQ(s.Next(Utc(2024, 1, 1, 10, 29, 59)), Utc(2024, 1, 1, 10, 30));
  const CronSchedule every = Parsed("* * * * *");
  EXPECT_EQ(every.Next(Utc(2024, 1, 1, 10, 0, 0)), Utc(2024, 1, 1, 10, 1, 0));
  EXPECT_EQ(every.Next(Utc(2024, 1, 1, 10, 0, 59) + absl::Milliseconds(999)),
            Utc(2024, 1, 1, 10, 1, 0));
}

TEST(CronNextTest, CrossesHourDayMonthAndYear) {
  EXPECT_THAT(Ticks("59 23 * * *", Utc(2024, 2, 28, 23, 59), 2),
              ElementsAre("2024-02-29 23:59:00 UTC", "2024-03-01 23:59:00 UTC"));
  EXPECT_THAT(Ticks("* * * * *", Utc(2024, 12, 31, 23, 58, 10), 2),
              ElementsAre("2024-12-31 23:59:00 UTC", "2025-01-01 00:00:00 UTC"));
  EXPECT_THAT(Ticks("0 0 1 1 *", Utc(2024, 1, 1, 0, 0), 2),
              ElementsAre("2025-01-01 00:00:00 UTC", "2026-01-01 00:00:00 UTC"));
  // Months without a 31st are skipped.
  EXPECT_THAT(Ticks("0 0 31 * *", Utc(2024, 1, 31, 0, 0), 4),
              ElementsAre("2024-03-31 00:00:00 UTC", "2024-05-31 00:00:00 UTC",
                          "2024-07-31 00:00:00 UTC", "2024-08-31 00:00:00 UTC"));
  // From late in a matching hour, day and month to the next one.
  EXPECT_THAT(Ticks("15 8 10 6 *", Utc(2024, 6, 10, 8, 16), 1),
              ElementsAre("2025-06-10 08:15:00 UTC"));
  EXPECT_THAT(Ticks("15 8-9 10 6 *", Utc(2024, 6, 10, 8, 16), 1),
              ElementsAre("2024-06-10 09:15:00 UTC"));
}

TEST(CronNextTest, FindsLeapDays) {
  EXPECT_THAT(Ticks("0 0 29 2 *", Utc(2023, 3, 1, 0, 0), 2),
              ElementsAre("2024-02-29 00:00:00 UTC", "2028-02-29 00:00:00 UTC"));
  // 2100 is not a leap year: eight years to the next 29 February.
  EXPECT_THAT(Ticks("0 0 29 2 *", Utc(2096, 3, 1, 0, 0), 1),
              ElementsAre("2104-02-29 00:00:00 UTC"));
}

TEST(CronNextTest, NeverTicksWhenNoDateExists) {
  EXPECT_EQ(Parsed("0 0 30 2 *").Next(Utc(2024, 1, 1, 0, 0)), absl::InfiniteFuture());
  EXPECT_EQ(Parsed("0 0 31 4,6,9,11 *").Next(Utc(2024, 1, 1, 0, 0)),
            absl::InfiniteFuture());
  EXPECT_EQ(Parsed("* * 30,31 feb *").Next(Utc(2024, 1, 1, 0, 0)),
            absl::InfiniteFuture());
}

TEST(CronNextTest, DayOfMonthOrDayOfWeekWhenBothAreRestricted) {
  // "0 0 29 2 1": 29 February or any Monday in February.
  EXPECT_THAT(Ticks("0 0 29 2 1", Utc(2023, 2, 1, 0, 0), 10),
              ElementsAre("2023-02-06 00:00:00 UTC", "2023-02-13 00:00:00 UTC",
                          "2023-02-20 00:00:00 UTC", "2023-02-27 00:00:00 UTC",
                          "2024-02-05 00:00:00 UTC", "2024-02-12 00:00:00 UTC",
                          "2024-02-19 00:00:00 UTC", "2024-02-26 00:00:00 UTC",
                          "2024-02-29 00:00:00 UTC", "2025-02-03 00:00:00 UTC"));
  // Every 13th and every Friday (13 September 2024 is both, once).
  EXPECT_THAT(Ticks("0 0 13 * FRI", Utc(2024, 9, 1, 0, 0), 8),
              ElementsAre("2024-09-06 00:00:00 UTC", "2024-09-13 00:00:00 UTC",
                          "2024-09-20 00:00:00 UTC", "2024-09-27 00:00:00 UTC",
                          "2024-10-04 00:00:00 UTC", "2024-10-11 00:00:00 UTC",
                          "2024-10-13 00:00:00 UTC", "2024-10-18 00:00:00 UTC"));
}

TEST(CronNextTest, DayOfMonthAndDayOfWeekWhenOneIsStar) {
  EXPECT_THAT(Ticks("0 0 * * FRI", Utc(2024, 9, 1, 0, 0), 3),
              ElementsAre("2024-09-06 00:00:00 UTC", "2024-09-13 00:00:00 UTC",
                          "2024-09-20 00:00:00 UTC"));
  EXPECT_THAT(Ticks("0 0 13 * *", Utc(2024, 9, 1, 0, 0), 2),
              ElementsAre("2024-09-13 00:00:00 UTC", "2024-10-13 00:00:00 UTC"));
  // As in Vixie cron, a field starting with '*' counts as unrestricted even
  // with a step: days 1, 11, 21, 31 that are Mondays.
  EXPECT_THAT(Ticks("0 0 */10 * MON", Utc(2023, 12, 31, 0, 0), 6),
              ElementsAre("2024-01-01 00:00:00 UTC", "2024-03-11 00:00:00 UTC",
                          "2024-04-01 00:00:00 UTC", "2024-07-01 00:00:00 UTC",
                          "2024-10-21 00:00:00 UTC", "2024-11-11 00:00:00 UTC"));
  // 29 February on a Sunday: 2088, then not until 2128.
  EXPECT_THAT(Ticks("0 0 29 2 */7", Utc(2088, 3, 1, 0, 0), 1),
              ElementsAre("2128-02-29 00:00:00 UTC"));
}

TEST(CronNextTest, InfiniteTimes) {
  const CronSchedule s = Parsed("* * * * *");
  EXPECT_EQ(s.Next(absl::InfiniteFuture()), absl::InfiniteFuture());
  const absl::Time first = s.Next(absl::InfinitePast());
  EXPECT_LT(first, Utc(2, 1, 1, 0, 0));
  EXPECT_GT(first, absl::InfinitePast());
  EXPECT_EQ(s.Next(Utc(9999, 12, 31, 23, 59)), absl::InfiniteFuture());
}

// ── Time zones and daylight saving ──

TEST(CronZoneTest, TicksAtLocalTime) {
  const CronSchedule s = Parsed("0 9 * * *", "Europe/Paris");
  EXPECT_EQ(s.Next(Utc(2024, 1, 10, 0, 0)), Utc(2024, 1, 10, 8, 0));  // CET
  EXPECT_EQ(s.Next(Utc(2024, 7, 10, 0, 0)), Utc(2024, 7, 10, 7, 0));  // CEST
}

TEST(CronZoneTest, ParisSpringForwardSkipsTheMissingHour) {
  // 2024-03-31: 02:00 CET becomes 03:00 CEST.
  EXPECT_THAT(Ticks("30 2 * * *", Utc(2024, 3, 29, 12, 0), 2, "Europe/Paris"),
              ElementsAre("2024-03-30 02:30:00 CET", "2024-04-01 02:30:00 CEST"));
  EXPECT_THAT(Ticks("0 2 * * *", Utc(2024, 3, 29, 12, 0), 2, "Europe/Paris"),
              ElementsAre("2024-03-30 02:00:00 CET", "2024-04-01 02:00:00 CEST"));
  // Every minute: 01:59 CET, then 03:00 CEST one minute later.
  EXPECT_THAT(Ticks("* * * * *", Utc(2024, 3, 31, 0, 58), 2, "Europe/Paris"),
              ElementsAre("2024-03-31 01:59:00 CET", "2024-03-31 03:00:00 CEST"));
  EXPECT_EQ(Parsed("* * * * *", "Europe/Paris").Next(Utc(2024, 3, 31, 0, 59)),
            Utc(2024, 3, 31, 1, 0));
}

TEST(CronZoneTest, ParisFallBackRunsTheRepeatedHourOnce) {
  // 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
  EXPECT_THAT(Ticks("30 2 * * *", Utc(2024, 10, 26, 12, 0), 2, "Europe/Paris"),
              ElementsAre("2024-10-27 02:30:00 CEST", "2024-10-28 02:30:00 CET"));
  const CronSchedule s = Parsed("30 2 * * *", "Europe/Paris");
  EXPECT_EQ(s.Next(Utc(2024, 10, 26, 12, 0)), Utc(2024, 10, 27, 0, 30));
  // From the second pass (02:15 CET) the 02:30 of the day has already run.
  EXPECT_EQ(s.Next(Utc(2024, 10, 27, 1, 15)), Utc(2024, 10, 28, 1, 30));
  // Every minute: 02:59 CEST, then 03:00 CET an hour and a minute later;
  // the second pass of 02:00-02:59 does not tick again.
  EXPECT_EQ(Parsed("* * * * *", "Europe/Paris").Next(Utc(2024, 10, 27, 0, 59)),
            Utc(2024, 10, 27, 2, 0));
  EXPECT_EQ(Parsed("* * * * *", "Europe/Paris").Next(Utc(2024, 10, 27, 1, 30)),
            Utc(2024, 10, 27, 2, 0));
}

TEST(CronZoneTest, NewYorkSpringForwardSkips0230) {
  // 2024-03-10: 02:00 EST becomes 03:00 EDT.
  EXPECT_THAT(Ticks("30 2 * * *", Utc(2024, 3, 9, 0, 0), 2, "America/New_York"),
              ElementsAre("2024-03-09 02:30:00 EST", "2024-03-11 02:30:00 EDT"));
  const CronSchedule s = Parsed("30 2 * * *", "America/New_York");
  EXPECT_EQ(s.Next(Utc(2024, 3, 9, 0, 0)), Utc(2024, 3, 9, 7, 30));
  EXPECT_EQ(s.Next(Utc(2024, 3, 9, 7, 30)), Utc(2024, 3, 11, 6, 30));
}

TEST(CronZoneTest, NewYorkFallBackRuns0130Once) {
  // 2024-11-03: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
  EXPECT_THAT(Ticks("30 1 * * *", Utc(2024, 11, 2, 0, 0), 3, "America/New_York"),
              ElementsAre("2024-11-02 01:30:00 EDT", "2024-11-03 01:30:00 EDT",
                          "2024-11-04 01:30:00 EST"));
  const CronSchedule s = Parsed("30 1 * * *", "America/New_York");
  EXPECT_EQ(s.Next(Utc(2024, 11, 2, 12, 0)), Utc(2024, 11, 3, 5, 30));
  EXPECT_EQ(s.Next(Utc(2024, 11, 3, 5, 30)), Utc(2024, 11, 4, 6, 30));
}

TEST(CronZoneTest, LordHoweShiftsByHalfAnHour) {
  // 2024-10-06 02:00 +1030 becomes 02:30 +11; 2024-04-07 02:00 +11 becomes
  // 01:30 +1030.
  const CronSchedule s = Parsed("15 2 * * *", "Australia/Lord_Howe");
  const absl::TimeZone tz = Zone("Australia/Lord_Howe");
  EXPECT_EQ(Show(s.Next(At(tz, 2024, 10, 5, 12, 0)), tz), "2024-10-07 02:15:00 +11");
  const CronSchedule t = Parsed("45 1 * * *", "Australia/Lord_Howe");
  EXPECT_EQ(t.Next(At(tz, 2024, 4, 6, 12, 0)), Utc(2024, 4, 6, 14, 45));  // +11
  EXPECT_EQ(t.Next(Utc(2024, 4, 6, 14, 45)), Utc(2024, 4, 7, 15, 15));    // +1030
}

// ── LastBetween ──

TEST(CronLastBetweenTest, AfterIsExcludedAndAtIncluded) {
  const CronSchedule s = Parsed("0 * * * *");
  EXPECT_EQ(s.LastBetween(Utc(2024, 1, 1, 10, 0), Utc(2024, 1, 1, 11, 0)),
            Utc(2024, 1, 1, 11, 0));
  EXPECT_EQ(s.LastBetween(Utc(2024, 1, 1, 10, 0), Utc(2024, 1, 1, 10, 59, 59)),
            absl::InfinitePast());
  EXPECT_EQ(s.LastBetween(Utc(2024, 1, 1, 9, 59, 59), Utc(2024, 1, 1, 10, 0)),
            Utc(2024, 1, 1, 10, 0));
  EXPECT_EQ(s.LastBetween(Utc(2024, 1, 1, 10, 0), Utc(2024, 1, 1, 10, 0)),
            absl::InfinitePast());
  EXPECT_EQ(s.LastBetween(Utc(2024, 1, 1, 12, 0), Utc(2024, 1, 1, 10, 0)),
            absl::InfinitePast());
}

TEST(CronLastBetweenTest, FindsTheLastTickOverYears) {
  EXPECT_EQ(Parsed("* * * * *").LastBetween(Utc(2021, 1, 1, 0, 0),
                                            Utc(2024, 1, 1, 0, 0, 30)),
            Utc(2024, 1, 1, 0, 0));
  EXPECT_EQ(Parsed("0 0 29 2 *").LastBetween(Utc(2097, 1, 1, 0, 0), Utc(2105, 1, 1, 0, 0)),
            Utc(2104, 2, 29, 0, 0));
  EXPECT_EQ(Parsed("0 0 29 2 *").LastBetween(Utc(2096, 3, 1, 0, 0), Utc(2104, 2, 28, 0, 0)),
            absl::InfinitePast());
  EXPECT_EQ(Parsed("0 0 30 2 *").LastBetween(Utc(2000, 1, 1, 0, 0), Utc(2040, 1, 1, 0, 0)),
            absl::InfinitePast());
  EXPECT_EQ(Parsed("@yearly").LastBetween(Utc(1970, 1, 1, 0, 0), Utc(2024, 6, 1, 0, 0)),
            Utc(2024, 1, 1, 0, 0));
  EXPECT_EQ(Parsed("0 12 * * MON").LastBetween(absl::InfinitePast(), Utc(2024, 1, 3, 0, 0)),
            Utc(2024, 1, 1, 12, 0));
  EXPECT_EQ(Parsed("0 0 1 1 *").LastBetween(absl::InfinitePast(), absl::InfiniteFuture()),
            Utc(9999, 1, 1, 0, 0));
}

TEST(CronLastBetweenTest, SecondPassOfFallBackHasSeenTheWholeHour) {
  // New York 2024-11-03: 01:00-01:59 EDT (05:00-05:59Z), then again as EST
  // (06:00-06:59Z).
  const CronSchedule at0130 = Parsed("30 1 * * *", "America/New_York");
  EXPECT_EQ(at0130.LastBetween(Utc(2024, 11, 2, 12, 0), Utc(2024, 11, 3, 6, 45)),
            Utc(2024, 11, 3, 5, 30));
  EXPECT_EQ(at0130.LastBetween(Utc(2024, 11, 2, 12, 0), Utc(2024, 11, 3, 6, 15)),
            Utc(2024, 11, 3, 5, 30));
  const CronSchedule every = Parsed("* * * * *", "America/New_York");
  EXPECT_EQ(every.LastBetween(Utc(2024, 11, 3, 0, 0), Utc(2024, 11, 3, 6, 15)),
            Utc(2024, 11, 3, 5, 59));
  EXPECT_EQ(every.LastBetween(Utc(2024, 11, 3, 0, 0), Utc(2024, 11, 3, 5, 45, 10)),
            Utc(2024, 11, 3, 5, 45));
  EXPECT_EQ(every.LastBetween(Utc(2024, 11, 3, 0, 0), Utc(2024, 11, 3, 7, 0)),
            Utc(2024, 11, 3, 7, 0));
  // Nothing new after the first pass's last minute.
  EXPECT_EQ(every.LastBetween(Utc(2024, 11, 3, 5, 59), Utc(2024, 11, 3, 6, 59, 59)),
            absl::InfinitePast());
}

TEST(CronLastBetweenTest, SpringForwardGapHasNoTicks) {
  const CronSchedule at0230 = Parsed("30 2 * * *", "America/New_York");
  EXPECT_EQ(at0230.LastBetween(Utc(2024, 3, 9, 12, 0), Utc(2024, 3, 11, 0, 0)),
            absl::InfinitePast());
  const CronSchedule every = Parsed("* * * * *", "America/New_York");
  EXPECT_EQ(every.LastBetween(Utc(2024, 3, 10, 0, 0), Utc(2024, 3, 10, 7, 0, 30)),
            Utc(2024, 3, 10, 7, 0));  // 03:00 EDT
  EXPECT_EQ(every.LastBetween(Utc(2024, 3, 10, 0, 0), Utc(2024, 3, 10, 6, 59, 59)),
            Utc(2024, 3, 10, 6, 59));  // 01:59 EST
}

// ── Cross-check against a minute-by-minute search ──

// A random field written the way a person might, with the set it stands for
// worked out here, apart from the parser.
struct RefField {
  std::string text;
  uint64_t bits = 0;
};

struct RefSchedule {
  std::string expr;
  RefField f[5];  // minute, hour, day-of-month, month, day-of-week

  bool Matches(absl::CivilMinute c) const {
    if (!(f[0].bits >> c.minute() & 1) || !(f[1].bits >> c.hour() & 1) ||
        !(f[3].bits >> c.month() & 1)) {
      return false;
    }
    const int weekday = (static_cast<int>(absl::GetWeekday(absl::CivilDay(c))) + 1) % 7;
    const bool dom = f[2].bits >> c.day() & 1;
    const bool dow = (f[4].bits >> weekday & 1) || (weekday == 0 && (f[4].bits >> 7 & 1));
    if (f[2].text[0] == '*' || f[4].text[0] == '*') return dom && dow;
    return dom || dow;
  }
};

std::string RandomValueText(std::mt19937& rng, int v, const char* const* names,
                            int first_name, int name_count) {
  const int i = v - first_name;
  if (names != nullptr && i >= 0 && i < name_count && rng() % 3 == 0) {
    std::string name = names[i];
    if (rng() % 2) name = absl::AsciiStrToUpper(name);
    if (rng() % 4 == 0) name[0] = absl::ascii_toupper(name[0]);
    return name;
  }
  return absl::StrCat(v);
}

RefField RandomField(std::mt19937& rng, int lo, int hi, int star_percent,
                     const char* const* names = nullptr, int first_name = 0,
                     int name_count = 0) {
  RefField field;
  auto uniform = [&rng](int a, int b) {
    return std::uniform_int_distribution<int>(a, b)(rng);
  };
  auto value = [&](int v) { return RandomValueText(rng, v, names, first_name, name_count); };
  auto step = [&]() { return uniform(0, 4) == 0 ? uniform(1, hi) : uniform(1, 6); };
  if (uniform(0, 99) < star_percent) {
    field.text = "*";
    for (int v = lo; v <= hi; ++v) field.bits |= uint64_t{1} << v;
    return field;
  }
  const int items = uniform(1, 3);
  for (int i = 0; i < items; ++i) {
    int first = lo, last = hi, by = 1;
    std::string item;
    switch (uniform(0, 5)) {
      case 0:
        item = "*";
        break;
      case 1:
        first = last = uniform(lo, hi);
        item = value(first);
        break;
      case 2:
        first = uniform(lo, hi);
        last = uniform(first, hi);
        item = absl::StrCat(value(first), "-", value(last));
        break;
      case 3:
        by = step();
        item = absl::StrCat("*/", by);
        break;
      case 4:
        first = uniform(lo, hi);
        last = uniform(first, hi);
        by = step();
        item = absl::StrCat(value(first), "-", value(last), "/", by);
        break;
      default:
        first = uniform(lo, hi);
        by = step();
        item = absl::StrCat(value(first), "/", by);
        break;
    }
    for (int v = first; v <= last; v += by) field.bits |= uint64_t{1} << v;
    absl::StrAppend(&field.text, i == 0 ? "" : ",", item);
  }
  return field;
}

constexpr const char* kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                   "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* kWeekdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

// Hours from a few items in 0-3 (lists, ranges, range steps): near the
// daylight-saving changes, which all happen in those hours.
RefField RandomEarlyHours(std::mt19937& rng) {
  RefField field;
  const int items = 1 + rng() % 2;
  for (int i = 0; i < items; ++i) {
    const int first = rng() % 4;
    const int last = first + rng() % (4 - first);
    // "3/2" would run to 23: a step only on a range.
    const int by = first == last ? 1 : 1 + rng() % 2;
    std::string item = first == last ? absl::StrCat(first) : absl::StrCat(first, "-", last);
    if (by > 1) absl::StrAppend(&item, "/", by);
    for (int v = first; v <= last; v += by) field.bits |= uint64_t{1} << v;
    absl::StrAppend(&field.text, i == 0 ? "" : ",", item);
  }
  return field;
}

RefSchedule RandomSchedule(std::mt19937& rng, bool early_hours = false) {
  RefSchedule s;
  s.f[0] = RandomField(rng, 0, 59, 30);
  s.f[1] = early_hours ? RandomEarlyHours(rng) : RandomField(rng, 0, 23, 30);
  s.f[2] = RandomField(rng, 1, 31, 60);
  s.f[3] = RandomField(rng, 1, 12, 60, kMonths, 1, 12);
  s.f[4] = RandomField(rng, 0, 7, 60, kWeekdays, 0, 7);
  s.expr = absl::StrJoin({s.f[0].text, s.f[1].text, s.f[2].text, s.f[3].text, s.f[4].text},
                         " ");
  return s;
}

// Checks Next and LastBetween of `s` against every minute of
// (after, after + window] in `tz`: a minute ticks when its local time matches
// and it is the first occurrence of that local time. Returns whether a tick
// was found in the window.
bool CrossCheck(const RefSchedule& ref, absl::string_view tz_name, absl::Time after,
                absl::Time at, absl::Duration window) {
  const absl::TimeZone tz = Zone(tz_name);
  absl::StatusOr<CronSchedule> s = CronSchedule::Parse(ref.expr, tz_name);
  if (!s.ok()) {
    ADD_FAILURE() << ref.expr << ": " << s.status();
    return false;
  }
  std::vector<absl::Time> ticks;
  // Zones here have whole-minute offsets: local minutes start on UTC minutes.
  const absl::Time end = after + window;
  for (absl::Time t = absl::FromUnixSeconds(absl::ToUnixSeconds(after) / 60 * 60 + 60);
       t <= end; t += absl::Minutes(1)) {
    const absl::CivilMinute local(tz.At(t).cs);
    if (ref.Matches(local) && tz.At(local).pre == t) ticks.push_back(t);
  }
  const std::string where =
      absl::StrCat("\"", ref.expr, "\" in ", tz_name, " after ", Show(after, tz));
  const absl::Time next = s->Next(after);
  if (!ticks.empty()) {
    EXPECT_EQ(Show(next, tz), Show(ticks.front(), tz)) << where;
  } else {
    EXPECT_GT(next, end) << where << ": Next " << Show(next, tz);
  }
  absl::Time last = absl::InfinitePast();
  for (absl::Time t : ticks) {
    if (t <= at) last = t;
  }
  EXPECT_EQ(Show(s->LastBetween(after, at), tz), Show(last, tz))
      << where << ", at " << Show(at, tz);
  return !ticks.empty();
}

TEST(CronCrossCheckTest, NextAndLastBetweenMatchMinuteByMinuteSearchInUtc) {
  std::mt19937 rng(20240601);
  const int64_t from = absl::ToUnixSeconds(Utc(2020, 1, 1, 0, 0));
  const int64_t to = absl::ToUnixSeconds(Utc(2030, 1, 1, 0, 0));
  const absl::Duration window = absl::Hours(24 * 4);
  int found = 0;
  constexpr int kExpressions = 2000;
  for (int i = 0; i < kExpressions; ++i) {
    const RefSchedule ref = RandomSchedule(rng);
    int64_t start = std::uniform_int_distribution<int64_t>(from, to)(rng);
    if (rng() % 2) start = start / 60 * 60;  // exactly on a minute, half the time
    const absl::Time after = absl::FromUnixSeconds(start);
    const absl::Time at =
        after + absl::Seconds(std::uniform_int_distribution<int64_t>(
                    0, absl::ToInt64Seconds(window))(rng));
    if (CrossCheck(ref, "UTC", after, at, window)) ++found;
    if (HasFailure()) break;  // one expression's failures are enough to read
  }
  // The generator must produce schedules that tick inside the window often
  // enough for the check to mean something.
  EXPECT_GT(found, kExpressions / 3);
}

TEST(CronCrossCheckTest, NextAndLastBetweenMatchMinuteByMinuteSearchAcrossDst) {
  std::mt19937 rng(7);
  const absl::Duration window = absl::Hours(24 * 3);
  for (const char* zone : {"America/New_York", "Europe/Paris", "Australia/Lord_Howe"}) {
    const absl::TimeZone tz = Zone(zone);
    // The zone's changes in 2024 and 2025.
    std::vector<absl::Time> changes;
    absl::TimeZone::CivilTransition tr;
    for (absl::Time t = Utc(2024, 1, 1, 0, 0);
         tz.NextTransition(t, &tr) && t < Utc(2026, 1, 1, 0, 0);) {
      t = tz.At(tr.to).trans;
      changes.push_back(t);
    }
    ASSERT_GE(changes.size(), 4u) << zone;
    int found = 0;
    for (int i = 0; i < 300; ++i) {
      const absl::Time change = changes[rng() % changes.size()];
      const RefSchedule ref = RandomSchedule(rng, /*early_hours=*/true);
      const absl::Time after =
          change - absl::Hours(36) +
          absl::Seconds(std::uniform_int_distribution<int>(0, 36 * 3600)(rng));
      const absl::Time at =
          change + absl::Seconds(std::uniform_int_distribution<int>(0, 36 * 3600)(rng));
      if (CrossCheck(ref, zone, after, at, window)) ++found;
      if (HasFailure()) break;
    }
    EXPECT_GT(found, 50) << zone;
  }
}

}  // namespace
}  // namespace conveyor::server
