#include "common/signals.h"

#include <pthread.h>
#include <unistd.h>

#include <thread>

#include "common/log.h"

namespace conveyor {

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return signals;
}

int AwaitStopSignal(const sigset_t& signals) {
  int sig = 0;
  sigwait(&signals, &sig);
  LogInfo("stop signal received", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  // A second stop signal during the drain exits at once.
  std::thread([signals] {
    int again = 0;
    sigwait(&signals, &again);
    LogWarning("second stop signal: exiting without finishing the drain");
    _exit(1);
  }).detach();
  return sig;
}

}  // namespace conveyor
