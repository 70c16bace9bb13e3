// Helpers shared by the journal tests: status matchers, a blocking append,
// full recovery into vectors, and a hook that holds a file sync open.
#ifndef CONVEYOR_TESTS_JOURNAL_JOURNAL_TEST_UTIL_H_
#define CONVEYOR_TESTS_JOURNAL_JOURNAL_TEST_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/journal.h"

namespace conveyor::server::journal::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P(StatusIs, code,
          std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, substr,
           std::string("has status code ") + absl::StatusCodeToString(code) +
               " and a message containing \"" + std::string(substr) + "\"") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code && absl::StrContains(s.message(), substr);
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.ok();
}

// Appends and waits for `done` (it runs on the writer thread).
inline absl::Status AppendAndWait(Journal& j, std::vector<std::string> records) {
  absl::Notification n;
  absl::Status result;
  j.Append(std::move(records), [&](absl::Status s) {
    result = std::move(s);
    n.Notify();
  });
  n.WaitForNotification();
  return result;
}

// Collects the results of `done` callbacks, in the order they ran.
class DoneLog {
 public:
  std::function<void(absl::Status)> Callback(int id) {
    return [this, id](absl::Status s) {
      absl::MutexLock lock(&mu_);
      results_.emplace_back(id, std::move(s));
    };
  }
  // Blocks until `n` callbacks ran.
  std::vector<std::pair<int, absl::Status>> WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return results_.size() >= n;
    };
    mu_.Await(absl::Condition(&enough));
    return results_;
  }
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return results_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<int, absl::Status>> results_ ABSL_GUARDED_BY(mu_);
};

struct Recovered {
  std::optional<std::pair<SequenceNumber, std::string>> snapshot;
  std::vector<std::pair<SequenceNumber, std::string>> records;

  std::vector<std::string> Data() const {
    std::vector<std::string> out;
    for (const auto& r : records) out.push_back(r.second);
    return out;
  }
};

inline absl::StatusOr<Recovered> RecoverAll(Journal& j) {
  Recovered out;
  absl::Status s = j.Recover(
      [&](const JournalSnapshot& snap) {
        out.snapshot.emplace(snap.cut, std::string(snap.state));
        return absl::OkStatus();
      },
      [&](const JournalRecord& r) {
        out.records.emplace_back(r.seq, std::string(r.data));
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

// A FakeEnv sync hook that, once armed, blocks the next sync of a file whose
// path ends with `suffix` until Release(); WaitUntilHeld() blocks the test
// until the writer is parked inside that sync.
class SyncGate {
 public:
  explicit SyncGate(std::string suffix = ".log") : suffix_(std::move(suffix)) {}

  std::function<void(const std::string&)> Hook() {
    return [this](const std::string& path) {
      if (!absl::EndsWith(path, suffix_)) return;
      absl::MutexLock lock(&mu_);
      if (!armed_) return;
      armed_ = false;
      held_ = true;
      mu_.Await(absl::Condition(&released_));
      held_ = false;
    };
  }
  void Arm() {
    absl::MutexLock lock(&mu_);
    armed_ = true;
    released_ = false;
  }
  void WaitUntilHeld() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&held_));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }

 private:
  const std::string suffix_;
  absl::Mutex mu_;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace conveyor::server::journal::testing

#endif  // CONVEYOR_TESTS_JOURNAL_JOURNAL_TEST_UTIL_H_
