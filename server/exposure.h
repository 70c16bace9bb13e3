// Safe defaults for where the broker listens (docs/security.md, "Safe
// defaults"): the gRPC API is served on a non-loopback address only with TLS
// and auth both on, or when the operator says --insecure.
//
// Pure functions of the flags; thread-safe.
#ifndef CONVEYOR_SERVER_EXPOSURE_H_
#define CONVEYOR_SERVER_EXPOSURE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace conveyor::server {

// True if only this machine can reach `listen` (a gRPC listen address): a
// host in 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z), "localhost", or a
// unix: / unix-abstract: socket. False for everything else, 0.0.0.0, [::],
// an empty host (":7400") and host names other than localhost included.
bool IsLoopbackListen(absl::string_view listen);

// What a non-loopback listener lacks, for messages: "TLS (--tls-cert and
// --tls-key)", "auth (--auth-tokens)", both joined by " and ", or "" if none.
std::string MissingProtections(bool tls, bool auth);

// OK when `listen` is loopback, or TLS and auth are both on, or `insecure`.
// Otherwise FAILED_PRECONDITION naming the address, what is missing and the
// ways out.
absl::Status CheckListenExposure(absl::string_view listen, bool tls, bool auth, bool insecure);

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_EXPOSURE_H_
