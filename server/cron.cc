#include "server/cron.h"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace conveyor::server {
namespace {

// Every month and weekday pattern repeats after 400 Gregorian years, so a
// search that finds nothing in this span would find nothing ever.
constexpr absl::civil_year_t kSearchYears = 401;

// Longer than any IANA name; the names come from clients.
constexpr size_t kMaxTimeZoneLength = 128;

constexpr const char* kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* kWeekdayNames[] = {"sun", "mon", "tue", "wed",
                                         "thu", "fri", "sat"};

struct FieldSpec {
  const char* name;
  int lo;
  int hi;
  const char* const* names;  // value `first_name + i` is names[i]; or null
  int name_count;
  int first_name;
  const char* names_hint;  // for the error message
};

constexpr FieldSpec kMinute = {"minute", 0, 59, nullptr, 0, 0, nullptr};
constexpr FieldSpec kHour = {"hour", 0, 23, nullptr, 0, 0, nullptr};
constexpr FieldSpec kDayOfMonth = {"day-of-month", 1, 31, nullptr, 0, 0, nullptr};
constexpr FieldSpec kMonth = {"month",     1,  12, kMonthNames,
                              12,          1,  "a month name (JAN-DEC)"};
constexpr FieldSpec kDayOfWeek = {"day-of-week", 0, 7, kWeekdayNames,
                                  7,             0, "a weekday name (SUN-SAT)"};

struct Macro {
  const char* name;
  const char* expansion;
};
constexpr Macro kMacros[] = {
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
    {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

// Client text echoed in an error message, quoted and escaped.
std::string Quote(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

absl::Status FieldError(const FieldSpec& spec, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("cron field \"", spec.name, "\": ", message));
}

// A value of the field: a number or, for month and day-of-week, a name.
absl::StatusOr<int> ParseValue(const FieldSpec& spec, absl::string_view token,
                               absl::string_view item) {
  if (token.empty()) {
    return FieldError(spec, absl::StrCat("item ", Quote(item), " has an empty value"));
  }
  if (std::all_of(token.begin(), token.end(), absl::ascii_isdigit)) {
    // More digits than any field needs is out of range, not an overflow.
    int value = token.size() > 4 ? spec.hi + 1 : 0;
    if (token.size() <= 4) {
      for (char c : token) value = value * 10 + (c - '0');
    }
    if (value < spec.lo || value > spec.hi) {
      return FieldError(spec, absl::StrCat(token, " is out of range ", spec.lo, "-",
                                           spec.hi));
    }
    return value;
  }
  for (int i = 0; i < spec.name_count; ++i) {
    if (absl::EqualsIgnoreCase(token, spec.names[i])) return spec.first_name + i;
  }
  if (spec.names_hint != nullptr) {
    return FieldError(spec, absl::StrCat(Quote(token), " is not a number or ",
                                         spec.names_hint));
  }
  return FieldError(spec, absl::StrCat(Quote(token), " is not a number"));
}

// One item of a field's list, added to `bits`.
absl::Status ParseItem(const FieldSpec& spec, absl::string_view item, uint64_t& bits) {
  std::vector<absl::string_view> base_step = absl::StrSplit(item, '/');
  if (base_step.size() > 2) {
    return FieldError(spec, absl::StrCat("item ", Quote(item), " has more than one '/'"));
  }
  const absl::string_view base = base_step[0];
  int step = 1;
  if (base_step.size() == 2) {
    const absl::string_view text = base_step[1];
    if (text.empty()) {
      return FieldError(spec, absl::StrCat("item ", Quote(item), " has an empty step"));
    }
    if (!std::all_of(text.begin(), text.end(), absl::ascii_isdigit)) {
      return FieldError(spec, absl::StrCat("step ", Quote(text), " is not a number"));
    }
    step = text.size() > 4 ? spec.hi + 1 : 0;
    if (text.size() <= 4) {
      for (char c : text) step = step * 10 + (c - '0');
    }
    if (step < 1 || step > spec.hi) {
      return FieldError(spec,
                        absl::StrCat("step ", text, " is out of range 1-", spec.hi));
    }
  }

  int first = spec.lo;
  int last = spec.hi;
  if (base != "*") {
    const size_t dash = base.find('-');
    if (dash == absl::string_view::npos) {
      absl::StatusOr<int> value = ParseValue(spec, base, item);
      if (!value.ok()) return value.status();
      first = *value;
      // "5/15" runs to the end of the field; "5" is just 5.
      last = base_step.size() == 2 ? spec.hi : *value;
    } else {
      absl::StatusOr<int> from = ParseValue(spec, base.substr(0, dash), item);
      if (!from.ok()) return from.status();
      absl::StatusOr<int> to = ParseValue(spec, base.substr(dash + 1), item);
      if (!to.ok()) return to.status();
      if (*from > *to) {
        return FieldError(spec, absl::StrCat("range ", Quote(base), " is reversed (",
                                             *from, " > ", *to, ")"));
      }
      first = *from;
      last = *to;
    }
  }
  for (int v = first; v <= last; v += step) bits |= uint64_t{1} << v;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ParseField(const FieldSpec& spec, absl::string_view text) {
  uint64_t bits = 0;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    if (item.empty()) {
      return FieldError(spec, absl::StrCat("empty item in list ", Quote(text)));
    }
    absl::Status status = ParseItem(spec, item, bits);
    if (!status.ok()) return status;
  }
  return bits;
}

// Only IANA-style names: they become a path under the zoneinfo directory, so
// absolute paths, "..", and the loader's "file:" prefix must not get through.
bool IsPlausibleZoneName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxTimeZoneLength || name.front() == '/') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '/' || c == '_' || c == '-' || c == '+';
  });
}

absl::Time MinTime() {
  return absl::FromCivil(absl::CivilSecond(1, 1, 1, 0, 0, 0), absl::UTCTimeZone());
}
absl::Time MaxTime() {
  return absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59),
                         absl::UTCTimeZone());
}

// Sunday = 0, as cron counts.
int CronWeekday(absl::CivilDay day) {
  return (static_cast<int>(absl::GetWeekday(day)) + 1) % 7;  // absl: Monday = 0
}

// Bits 0..n (n <= 31).
uint32_t BitsUpTo(int n) {
  return static_cast<uint32_t>((uint64_t{2} << n) - 1);
}

}  // namespace

CronSchedule::CronSchedule(std::string expr, std::string time_zone, absl::TimeZone tz,
                           const Fields& fields)
    : expr_(std::move(expr)),
      time_zone_(std::move(time_zone)),
      tz_(tz),
      fields_(fields) {
  for (int first = 0; first < 7; ++first) {
    for (int day = 1; day <= 31; ++day) {
      if (fields_.weekdays >> ((first + day - 1) % 7) & 1) {
        weekday_days_[first] |= uint32_t{1} << day;
      }
    }
  }
}

absl::StatusOr<CronSchedule> CronSchedule::Parse(absl::string_view expr,
                                                 absl::string_view time_zone) {
  if (expr.size() > kMaxExprLength) {
    return absl::InvalidArgumentError(absl::StrCat("cron expression is ", expr.size(),
                                                   " characters long; the limit is ",
                                                   kMaxExprLength));
  }
  absl::string_view text = absl::StripAsciiWhitespace(expr);
  if (absl::StartsWith(text, "@")) {
    const Macro* macro = nullptr;
    for (const Macro& m : kMacros) {
      if (absl::EqualsIgnoreCase(text, m.name)) macro = &m;
    }
    if (macro == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown cron macro ", Quote(text),
          "; want @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"));
    }
    text = macro->expansion;
  }

  std::vector<absl::string_view> parts =
      absl::StrSplit(text, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (parts.size() != 5) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cron expression ", Quote(expr), " has ", parts.size(),
        " fields; want 5 (minute hour day-of-month month day-of-week) or a macro "
        "such as @daily"));
  }
  Fields fields;
  const FieldSpec* specs[] = {&kMinute, &kHour, &kDayOfMonth, &kMonth, &kDayOfWeek};
  uint64_t bits[5];
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<uint64_t> field = ParseField(*specs[i], parts[i]);
    if (!field.ok()) return field.status();
    bits[i] = *field;
  }
  fields.minutes = bits[0];
  fields.hours = static_cast<uint32_t>(bits[1]);
  fields.days = static_cast<uint32_t>(bits[2]);
  fields.months = static_cast<uint32_t>(bits[3]);
  // 7 is another name for Sunday.
  fields.weekdays = static_cast<uint32_t>((bits[4] | bits[4] >> 7) & 0x7f);
  fields.days_star = parts[2].front() == '*';
  fields.weekdays_star = parts[4].front() == '*';

  absl::TimeZone tz = absl::UTCTimeZone();
  if (!time_zone.empty() && time_zone != "UTC") {
    if (!IsPlausibleZoneName(time_zone) ||
        !absl::LoadTimeZone(std::string(time_zone), &tz)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown time zone ", Quote(time_zone)));
    }
  }
  return CronSchedule(std::string(expr), std::string(time_zone), tz, fields);
}

uint32_t CronSchedule::DayMask(absl::CivilMonth month) const {
  const absl::CivilDay first(month);
  const int days_in_month = static_cast<int>(absl::CivilDay(month + 1) - first);
  const uint32_t weekdays = weekday_days_[CronWeekday(first)];
  const uint32_t matching = fields_.days_star || fields_.weekdays_star
                                ? fields_.days & weekdays
                                : fields_.days | weekdays;
  return matching & BitsUpTo(days_in_month) & ~uint32_t{1};
}

// Each step either returns a match or moves `c` forward to the start of the
// next month, day, hour or matching minute that could match, so the loop
// runs at most a few times per month searched.
std::optional<absl::CivilMinute> CronSchedule::NextMatch(
    absl::CivilMinute c, absl::civil_year_t last_year) const {
  while (c.year() <= last_year) {
    const absl::CivilMonth month(c);
    if ((fields_.months >> month.month() & 1) == 0) {
      c = absl::CivilMinute(month + 1);
      continue;
    }
    const uint32_t days = DayMask(month) & (~uint32_t{0} << c.day());
    if (days == 0) {
      c = absl::CivilMinute(month + 1);
      continue;
    }
    const int day = std::countr_zero(days);
    if (day != c.day()) c = absl::CivilMinute(absl::CivilDay(month.year(), month.month(), day));
    const uint32_t hours = fields_.hours & (~uint32_t{0} << c.hour());
    if (hours == 0) {
      c = absl::CivilMinute(absl::CivilDay(c) + 1);
      continue;
    }
    const int hour = std::countr_zero(hours);
    if (hour != c.hour()) c = absl::CivilMinute(c.year(), c.month(), c.day(), hour, 0);
    const uint64_t minutes = fields_.minutes & (~uint64_t{0} << c.minute());
    if (minutes == 0) {
      c = absl::CivilMinute(absl::CivilHour(c) + 1);
      continue;
    }
    return absl::CivilMinute(c.year(), c.month(), c.day(), c.hour(),
                             std::countr_zero(minutes));
  }
  return std::nullopt;
}

// NextMatch backwards: each step moves `c` to the last minute of the previous
// month, day or hour that could match.
std::optional<absl::CivilMinute> CronSchedule::PrevMatch(
    absl::CivilMinute c, absl::civil_year_t first_year) const {
  while (c.year() >= first_year) {
    const absl::CivilMonth month(c);
    if ((fields_.months >> month.month() & 1) == 0) {
      c = absl::CivilMinute(month) - 1;
      continue;
    }
    const uint32_t days = DayMask(month) & BitsUpTo(c.day());
    if (days == 0) {
      c = absl::CivilMinute(month) - 1;
      continue;
    }
    const int day = std::bit_width(days) - 1;
    if (day != c.day()) {
      c = absl::CivilMinute(absl::CivilDay(month.year(), month.month(), day) + 1) - 1;
    }
    const uint32_t hours = fields_.hours & BitsUpTo(c.hour());
    if (hours == 0) {
      c = absl::CivilMinute(absl::CivilDay(c)) - 1;
      continue;
    }
    const int hour = std::bit_width(hours) - 1;
    if (hour != c.hour()) c = absl::CivilMinute(c.year(), c.month(), c.day(), hour, 59);
    const uint64_t minutes =
        fields_.minutes & ((uint64_t{2} << c.minute()) - 1);  // minute <= 59
    if (minutes == 0) {
      c = absl::CivilMinute(absl::CivilHour(c)) - 1;
      continue;
    }
    return absl::CivilMinute(c.year(), c.month(), c.day(), c.hour(),
                             std::bit_width(minutes) - 1);
  }
  return std::nullopt;
}

absl::CivilMinute CronSchedule::LastMinuteStartedBy(absl::Time at) const {
  const absl::CivilSecond local = tz_.At(at).cs;
  const absl::TimeZone::TimeInfo info = tz_.At(local);
  if (info.kind == absl::TimeZone::TimeInfo::REPEATED && at >= info.trans) {
    // `at` is in the second pass of a fall-back hour: every minute of that
    // hour first occurred before the change, so all of them have started.
    return absl::CivilMinute(tz_.At(info.trans - absl::Seconds(1)).cs);
  }
  return absl::CivilMinute(local);
}

absl::Time CronSchedule::Next(absl::Time after) const {
  if (after >= MaxTime()) return absl::InfiniteFuture();
  after = std::max(after, MinTime());
  // A tick is the first occurrence of its local minute, and first occurrences
  // grow with the local time, so no tick after `after` is at an earlier local
  // minute than `after`'s own.
  absl::CivilMinute from(tz_.At(after).cs);
  const absl::civil_year_t last_year = from.year() + kSearchYears;
  while (std::optional<absl::CivilMinute> match = NextMatch(from, last_year)) {
    const absl::TimeZone::TimeInfo info = tz_.At(*match);
    // Skipped: in the spring-forward gap. At or before `after`: the first
    // occurrence of a minute that `after`, in the second pass of a fall-back
    // hour, has already seen.
    if (info.kind != absl::TimeZone::TimeInfo::SKIPPED && info.pre > after) {
      return info.pre > MaxTime() ? absl::InfiniteFuture() : info.pre;
    }
    from = *match + 1;
  }
  return absl::InfiniteFuture();
}

absl::Time CronSchedule::LastBetween(absl::Time after, absl::Time at) const {
  at = std::min(at, MaxTime());
  if (at <= after || at < MinTime()) return absl::InfinitePast();
  absl::CivilMinute from = LastMinuteStartedBy(at);
  // A year of margin for the zone's offset; ticks at or before `after` are
  // rejected below.
  const absl::civil_year_t first_year = std::max(
      tz_.At(std::max(after, MinTime())).cs.year() - 1, from.year() - kSearchYears);
  while (std::optional<absl::CivilMinute> match = PrevMatch(from, first_year)) {
    const absl::TimeZone::TimeInfo info = tz_.At(*match);
    if (info.kind != absl::TimeZone::TimeInfo::SKIPPED && info.pre <= at) {
      return info.pre > after ? info.pre : absl::InfinitePast();
    }
    from = *match - 1;
  }
  return absl::InfinitePast();
}

}  // namespace conveyor::server
