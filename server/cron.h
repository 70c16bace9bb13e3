// Cron: recurring schedules ("every weekday at 09:30 in Europe/Paris") and the
// times at which they tick. The broker submits a task on every tick.
//
// Syntax: five fields separated by spaces or tabs,
//
//   minute  hour  day-of-month  month  day-of-week
//   0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)
//
// Each field is a comma-separated list of items; an item is
//   *          every value of the field
//   5          one value
//   1-5        a range, both ends included (5-1 is an error)
//   */15       every 15th value of the field, from its first value
//   10-50/10   every 10th value of a range: 10,20,30,40,50
//   5/15       every 15th value from 5 to the end of the field: 5,20,35,50
// Months may be written JAN-DEC and weekdays SUN-SAT (any case), also in
// ranges (MON-FRI) and steps (JAN-DEC/3). A step is 1 up to the field's
// largest value. An expression is at most 256 characters.
//
// Instead of five fields, one macro:
//   @yearly, @annually   0 0 1 1 *
//   @monthly             0 0 1 * *
//   @weekly              0 0 * * 0
//   @daily, @midnight    0 0 * * *
//   @hourly              0 * * * *
//
// Day-of-month and day-of-week follow the Vixie cron rule: when both are
// restricted, a day matches if EITHER matches ("0 0 13 * FRI" is every 13th
// and every Friday); when one of them is unrestricted, both must match. As in
// Vixie cron, a field is unrestricted when its text starts with `*`, so
// "*/2" counts as unrestricted: "0 0 */2 * MON" is odd days that are Mondays.
//
// Ticks are whole local minutes (second 0) in the schedule's time zone. On a
// daylight-saving change, a local time that does not exist (the spring-forward
// gap) has no tick that day, and a local time that occurs twice (fall-back)
// ticks once, at its first occurrence. So ticks are strictly increasing and a
// caller that runs each tick from Next() runs it exactly once.
//
// Times are taken within years 1 to 9999 (UTC): earlier times count as the
// start of year 1, there are no ticks after the end of year 9999.
//
// Thread-safety: a CronSchedule is immutable after Parse; its const methods
// may be called from any number of threads.
#ifndef CONVEYOR_SERVER_CRON_H_
#define CONVEYOR_SERVER_CRON_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace conveyor::server {

class CronSchedule {
 public:
  // The longest expression Parse accepts.
  static constexpr size_t kMaxExprLength = 256;

  // Parses a cron expression (see above) and a time zone name: "" or "UTC" is
  // UTC, otherwise an IANA name such as "Europe/Paris" read from the system's
  // zoneinfo (the tzdata package). INVALID_ARGUMENT with a message that names
  // the field and the value that was wrong, e.g.
  //   cron field "hour": 25 is out of range 0-23
  //   unknown time zone "Mars/Base"
  static absl::StatusOr<CronSchedule> Parse(absl::string_view expr,
                                            absl::string_view time_zone);

  // The first tick strictly after `after`; InfiniteFuture if there is none
  // (e.g. "0 0 30 2 *"). Skips whole months, days and hours that cannot
  // match, so a call costs microseconds even when the next tick is years away
  // (the search covers 400 years, a full cycle of the Gregorian calendar, so
  // "none" means never).
  absl::Time Next(absl::Time after) const;

  // The last tick at or before `at` and strictly after `after`; InfinitePast
  // if there is none (also when at <= after). For the "run once to catch up"
  // misfire policy; as fast as Next however long the gap.
  absl::Time LastBetween(absl::Time after, absl::Time at) const;

  // The expression and the time zone name as given to Parse.
  const std::string& expr() const { return expr_; }
  const std::string& time_zone() const { return time_zone_; }

 private:
  // The parsed fields as bit sets: bit v is set when value v matches.
  struct Fields {
    uint64_t minutes = 0;  // bits 0-59
    uint32_t hours = 0;    // bits 0-23
    uint32_t days = 0;     // bits 1-31 (day of month)
    uint32_t months = 0;   // bits 1-12
    uint32_t weekdays = 0; // bits 0-6, Sunday is 0
    bool days_star = false;      // day-of-month starts with '*'
    bool weekdays_star = false;  // day-of-week starts with '*'
  };

  CronSchedule(std::string expr, std::string time_zone, absl::TimeZone tz,
               const Fields& fields);

  // The days of `month` that match the day-of-month and day-of-week fields,
  // as bits 1-31.
  uint32_t DayMask(absl::CivilMonth month) const;
  // The first local minute >= `from` that matches every field, searching no
  // later than the end of year `last_year`.
  std::optional<absl::CivilMinute> NextMatch(absl::CivilMinute from,
                                             absl::civil_year_t last_year) const;
  // The last local minute <= `from` that matches every field, searching no
  // earlier than the start of year `first_year`.
  std::optional<absl::CivilMinute> PrevMatch(
      absl::CivilMinute from, absl::civil_year_t first_year) const;
  // The latest local minute whose first occurrence is at or before `at`.
  absl::CivilMinute LastMinuteStartedBy(absl::Time at) const;

  std::string expr_;
  std::string time_zone_;
  absl::TimeZone tz_;
  Fields fields_;
  // For each weekday of the 1st of a month (Sunday = 0), the days 1-31 of
  // that month that match the day-of-week field.
  std::array<uint32_t, 7> weekday_days_{};
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_CRON_H_
