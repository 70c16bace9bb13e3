// The `conveyor` commands for workflows: map, group submit|get|watch|cancel,
// chain get|cancel, schedule create|list|get|pause|resume|delete, and the
// chain wait of `submit --then --wait`. Each takes the parsed command line
// and a Client, prints its answer (client/cli_io.h) and returns the exit
// code; `conveyor COMMAND --help` (client/cli_args.cc) documents each.
//
// Thread-safety: none needed; the CLI runs one command on one thread.
#ifndef CONVEYOR_CLIENT_CLI_WORKFLOWS_H_
#define CONVEYOR_CLIENT_CLI_WORKFLOWS_H_

#include <string>

#include "client/cli_args.h"
#include "client/client.h"

namespace conveyor::client {

int RunMap(const Invocation& inv, Client& client);
int RunGroupSubmit(const Invocation& inv, Client& client);
int RunGroupGet(const Invocation& inv, Client& client);
int RunGroupWatch(const Invocation& inv, Client& client);
int RunGroupCancel(const Invocation& inv, Client& client);
int RunChainGet(const Invocation& inv, Client& client);
int RunChainCancel(const Invocation& inv, Client& client);
int RunScheduleCreate(const Invocation& inv, Client& client);
int RunScheduleList(const Invocation& inv, Client& client);
int RunScheduleGet(const Invocation& inv, Client& client);
int RunSchedulePause(const Invocation& inv, Client& client);
int RunScheduleResume(const Invocation& inv, Client& client);
int RunScheduleDelete(const Invocation& inv, Client& client);

// `submit --then --wait`: polls chain `id` (GetChain) until it ends, with
// its stage on a terminal's stderr; prints the last stage's result (json:
// the Chain). EX_OK if it SUCCEEDED, kExitTaskFailed otherwise, EX_TEMPFAIL
// when `deadline` passes first.
int WaitForChain(const Invocation& inv, Client& client, const std::string& id,
                 absl::Duration deadline = absl::InfiniteDuration());

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_CLI_WORKFLOWS_H_
