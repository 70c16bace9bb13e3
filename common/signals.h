// Stop-signal handling shared by the daemons (conveyord, conveyor-worker and
// the worker SDK's Run).
//
// The pattern: block SIGTERM and SIGINT before any thread starts, so every
// thread inherits the mask and only the thread that calls sigwait takes them;
// the first signal starts a drain, a second one ends the process at once.
#ifndef CONVEYOR_COMMON_SIGNALS_H_
#define CONVEYOR_COMMON_SIGNALS_H_

#include <signal.h>

namespace conveyor {

// Blocks SIGTERM and SIGINT in the calling thread (threads started later
// inherit it) and ignores SIGPIPE. Call before starting any thread. Returns
// the blocked set, for AwaitStopSignal.
sigset_t BlockStopSignals();

// Waits for the first stop signal in `signals` and logs it; from then on a
// second one logs a warning and exits the process at once with status 1.
// Returns the signal received.
int AwaitStopSignal(const sigset_t& signals);

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_SIGNALS_H_
