// abuse_probe: the "normal client" of the abuse suite (tests/abuse/h2_abuse.py).
// On its own connection it runs Submit + GetTask round trips against a broker
// for a given time, paced at one round trip per --interval_ms at most, and
// prints one JSON line:
//
//   {"ops":N,"errors":E,"reclaim_errors":R,"connect_ms":C,"p50_ms":A,
//    "p90_ms":B,"p99_ms":X,"max_ms":M,"seconds":S,"first_errors":["..."]}
//
// Latencies are of whole round trips (Submit, then GetTask of the task it
// returned), failed ones included (a call that times out counts its
// timeout). Calls are made once (no client retries), so every failure shows.
// "reclaim_errors" counts those of the "errors" that gRPC's memory-quota
// reclaimers cause on purpose: the connection closed with GOAWAY (UNAVAILABLE
// "GOAWAY received") or the stream reset with ENHANCE_YOUR_CALM
// (RESOURCE_EXHAUSTED "Received RST_STREAM with error code 11").
// "connect_ms" is the time of the first Health call (connection included);
// with --wait_ready_ms=N the probe first retries Health for up to N ms
// (failures then are not errors) and "connect_ms" is the time until the
// broker first answered, "ready":false if it never did (then no round trip
// is made).
//
//   abuse_probe --addr=127.0.0.1:PORT [--seconds=5] [--interval_ms=5]
//       [--queue=abuse-probe] [--timeout_ms=5000] [--payload_bytes=64]
//       [--wait_ready_ms=0]
//
// Exit 0 when it ran (the driver judges the numbers), 64 on bad arguments.
// Every loop is bounded by --seconds (plus one call's timeout).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace conveyor::abuse {
namespace {

namespace v1 = ::conveyor::v1;

struct Config {
  std::string addr;
  double seconds = 5;
  double interval_ms = 5;
  std::string queue = "abuse-probe";
  int timeout_ms = 5000;
  size_t payload_bytes = 64;
  int wait_ready_ms = 0;
};

bool ParseArgs(int argc, char** argv, Config* cfg) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    absl::string_view value;
    auto flag = [&](absl::string_view name) {
      const std::string prefix = absl::StrCat("--", name, "=");
      if (!absl::StartsWith(arg, prefix)) return false;
      value = arg.substr(prefix.size());
      return true;
    };
    bool ok = true;
    if (flag("addr")) {
      cfg->addr = std::string(value);
    } else if (flag("seconds")) {
      ok = absl::SimpleAtod(value, &cfg->seconds) && cfg->seconds > 0 && cfg->seconds <= 600;
    } else if (flag("interval_ms")) {
      ok = absl::SimpleAtod(value, &cfg->interval_ms) && cfg->interval_ms >= 0;
    } else if (flag("queue")) {
      cfg->queue = std::string(value);
    } else if (flag("timeout_ms")) {
      ok = absl::SimpleAtoi(value, &cfg->timeout_ms) && cfg->timeout_ms > 0;
    } else if (flag("payload_bytes")) {
      ok = absl::SimpleAtoi(value, &cfg->payload_bytes);
    } else if (flag("wait_ready_ms")) {
      ok = absl::SimpleAtoi(value, &cfg->wait_ready_ms) && cfg->wait_ready_ms >= 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "abuse_probe: bad argument %s\n", argv[i]);
      return false;
    }
  }
  if (cfg->addr.empty()) {
    std::fprintf(stderr, "abuse_probe: --addr=HOST:PORT is required\n");
    return false;
  }
  return true;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The q-quantile (nearest rank) of sorted `v`; 0 when empty.
double Quantile(const std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// An error gRPC 1.51's memory-quota reclaimers cause on purpose (see the
// header comment); the driver judges these apart from all other errors.
bool IsReclaimError(const absl::Status& s) {
  const absl::string_view m = s.message();
  return (absl::IsUnavailable(s) && absl::StrContains(m, "GOAWAY received")) ||
         (absl::IsResourceExhausted(s) &&
          absl::StrContains(m, "Received RST_STREAM with error code 11"));
}

int Run(const Config& cfg) {
  client::ClientOptions options;
  options.address = cfg.addr;
  options.timeout = absl::Milliseconds(cfg.timeout_ms);
  options.submit_attempts = 1;
  options.read_attempts = 1;
  // A connection of its own, never shared with anything else in-process.
  options.channel_args.SetInt("grpc.use_local_subchannel_pool", 1);
  client::Client client(options);

  std::vector<double> latencies_ms;
  std::vector<std::string> first_errors;
  uint64_t errors = 0;
  uint64_t reclaim_errors = 0;
  auto fail = [&](const absl::Status& s) {
    ++errors;
    if (IsReclaimError(s)) ++reclaim_errors;
    if (first_errors.size() < 3) first_errors.push_back(s.ToString());
  };

  const absl::Time connect_start = absl::Now();
  bool ready = false;
  if (cfg.wait_ready_ms > 0) {
    const absl::Time give_up = connect_start + absl::Milliseconds(cfg.wait_ready_ms);
    while (!ready && absl::Now() < give_up) {
      ready = client.Health().ok();
      if (!ready) absl::SleepFor(absl::Milliseconds(20));
    }
  } else if (absl::StatusOr<client::ServingStatus> health = client.Health(); !health.ok()) {
    fail(health.status());
  } else {
    ready = true;
  }
  const double connect_ms = absl::ToDoubleMilliseconds(absl::Now() - connect_start);

  const std::string payload(cfg.payload_bytes, 'p');
  const absl::Time start = absl::Now();
  const absl::Time end = ready || cfg.wait_ready_ms == 0 ? start + absl::Seconds(cfg.seconds) : start;
  const absl::Duration interval = absl::Milliseconds(cfg.interval_ms);
  for (uint64_t i = 0;; ++i) {
    const absl::Time due = start + interval * static_cast<double>(i);
    if (due >= end) break;
    if (absl::Time now = absl::Now(); now < due) absl::SleepFor(due - now);
    if (absl::Now() >= end) break;
    const absl::Time t0 = absl::Now();
    v1::TaskSpec spec;
    spec.set_queue(cfg.queue);
    spec.set_type("probe");
    spec.set_payload(payload);
    absl::StatusOr<v1::SubmitResponse> submitted = client.Submit(spec);
    if (!submitted.ok()) {
      fail(submitted.status());
    } else {
      absl::StatusOr<v1::Task> task = client.GetTask(submitted->task().id());
      if (!task.ok()) {
        fail(task.status());
      } else if (task->id() != submitted->task().id()) {
        fail(absl::InternalError(
            absl::StrCat("GetTask(", submitted->task().id(), ") returned ", task->id())));
      }
    }
    latencies_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  std::sort(latencies_ms.begin(), latencies_ms.end());
  std::string errs;
  for (const std::string& e : first_errors) {
    absl::StrAppend(&errs, errs.empty() ? "" : ",", JsonString(e));
  }
  std::printf(
      "{\"ops\":%zu,\"errors\":%llu,\"reclaim_errors\":%llu,\"ready\":%s,\"connect_ms\":%.3f,"
      "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"seconds\":%.3f,"
      "\"first_errors\":[%s]}\n",
      latencies_ms.size(), static_cast<unsigned long long>(errors),
      static_cast<unsigned long long>(reclaim_errors), ready ? "true" : "false",
      connect_ms,
      Quantile(latencies_ms, 0.5), Quantile(latencies_ms, 0.9), Quantile(latencies_ms, 0.99),
      latencies_ms.empty() ? 0.0 : latencies_ms.back(), seconds, errs.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace conveyor::abuse

int main(int argc, char** argv) {
  conveyor::abuse::Config cfg;
  if (!conveyor::abuse::ParseArgs(argc, argv, &cfg)) return 64;
  return conveyor::abuse::Run(cfg);
}
