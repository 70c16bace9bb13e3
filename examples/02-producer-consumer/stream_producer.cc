// stream_producer: a producer on one SubmitStream (Client::OpenSubmitStream).
//
// Sends --count tasks (--type, --payload) to --queue, keeping up to --window
// of them sent and unanswered. Each answer
// means the task is stored (durable with --fsync=always); on a bounded queue
// with --full-policy wait an answer comes only when there is room, so the
// producer runs at most --window tasks ahead of the queue. Run a broker and a
// worker serving the queue, then:
//
//   conveyor queue create jobs --capacity 5 --full-policy wait
//   conveyor-worker --queue=jobs --concurrency=1 &
//   stream_producer --broker=127.0.0.1:7400 --queue=jobs --count=20 --window=4
//
// Prints "accepted <id>" per task as its answer arrives and a summary; exits 1
// if any task was refused or the stream broke (the tasks it did not answer
// are listed by idempotency key, to be sent again).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/flags.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:7400", "Broker host:port.");
ABSL_FLAG(std::string, queue, "jobs", "Queue of the tasks.");
ABSL_FLAG(std::string, type, "sleep", "Task type.");
ABSL_FLAG(std::string, payload, "200ms", "Payload of every task.");
ABSL_FLAG(int, count, 20, "Tasks to send.");
ABSL_FLAG(int, window, 4, "Tasks sent and not yet answered, at most (1 to 512).");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "stream_producer: sends tasks on one SubmitStream, each acknowledged.\n"
      "Usage: stream_producer [--broker=HOST:PORT] [--queue=Q] [--type=T] [--payload=P]\n"
      "       [--count=N] [--window=W]");
  std::vector<std::string> args = conveyor::NormalizeFlagNames(argc, argv);
  std::vector<char*> argv2 = conveyor::ArgvOf(args);
  absl::ParseCommandLine(static_cast<int>(args.size()), argv2.data());

  conveyor::client::ClientOptions options;
  options.address = absl::GetFlag(FLAGS_broker);
  // A parked submit (full WAIT queue) is answered when there is room: give
  // each stream call longer than the consumer needs to make some.
  options.timeout = absl::Seconds(60);
  conveyor::client::Client client(options);
  std::unique_ptr<conveyor::client::SubmitStream> stream =
      client.OpenSubmitStream(static_cast<size_t>(absl::GetFlag(FLAGS_window)));

  const int count = absl::GetFlag(FLAGS_count);
  const size_t window = static_cast<size_t>(absl::GetFlag(FLAGS_window));
  int accepted = 0;
  int refused = 0;
  absl::Status broke;
  // Takes the oldest answer: the task's id, or why it was refused (the
  // stream carries on), or the error that broke the stream.
  auto take_answer = [&] {
    absl::StatusOr<conveyor::v1::SubmitResponse> r = stream->Next();
    if (r.ok()) {
      ++accepted;
      std::printf("accepted %s\n", r->task().id().c_str());
    } else if (stream->broken()) {
      broke = r.status();
    } else {
      ++refused;
      std::printf("refused: %s\n", r.status().ToString().c_str());
    }
    std::fflush(stdout);
  };
  for (int i = 0; i < count && broke.ok(); ++i) {
    conveyor::v1::TaskSpec spec;
    spec.set_queue(absl::GetFlag(FLAGS_queue));
    spec.set_type(absl::GetFlag(FLAGS_type));
    spec.set_payload(absl::GetFlag(FLAGS_payload));
    broke = stream->Send(std::move(spec));
    // A full window: wait for the oldest answer before sending more.
    while (broke.ok() && stream->unanswered() >= window) take_answer();
  }
  while (broke.ok() && stream->unanswered() > 0) take_answer();
  std::printf("sent %d: %d accepted, %d refused\n", count, accepted, refused);
  if (!broke.ok()) {
    std::printf("the stream broke: %s\n", broke.ToString().c_str());
    for (const conveyor::v1::TaskSpec& spec : stream->TakeUnanswered()) {
      std::printf("unanswered: %s\n", spec.idempotency_key().c_str());
    }
    return 1;
  }
  return refused == 0 ? 0 : 1;
}
