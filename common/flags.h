// Helpers shared by the daemons' main(): flags and process-wide settings.
#ifndef CONVEYOR_COMMON_FLAGS_H_
#define CONVEYOR_COMMON_FLAGS_H_

#include <string>
#include <vector>

namespace conveyor {

// Abseil flags are spelled with underscores; users type dashes
// (--port-file). Returns argv with each flag name's dashes turned into
// underscores (values untouched, nothing after a bare "--").
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

// argv-style pointers into `args` (valid while `args` lives).
std::vector<char*> ArgvOf(std::vector<std::string>& args);

// Makes --help list the flags defined in the file whose path ends with
// `main_file` (Abseil's default looks for a file named after the binary).
void ListFlagsFromFile(std::string main_file);

// Process-wide settings for a daemon (and the benchmarks that measure one),
// called first in main():
//  - Abseil's mutex deadlock detection off. Debian's Abseil is built with it
//    on; it records every lock acquisition in a global graph (a lock and
//    unlock takes about 69 ns with it, 24 ns without). Tests and tools keep
//    it on.
//  - The soft limit on open files raised to the hard limit (RaiseFileLimit).
void SetDaemonDefaults();

// Raises this process's soft RLIMIT_NOFILE to its hard limit: each connected
// worker or client is a socket, and the usual soft default (1024) would cap
// a broker at about a thousand connections. Returns the soft limit now in
// force (0 if it cannot be read).
unsigned long RaiseFileLimit();

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_FLAGS_H_
