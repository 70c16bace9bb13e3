// Conversions at the gRPC edge, shared by the broker, the worker and the
// client: absl::Status <-> grpc::Status, absl::Time/Duration <-> protobuf
// Timestamp/Duration, and the sysexits.h exit code for a status.
#ifndef CONVEYOR_COMMON_GRPC_UTIL_H_
#define CONVEYOR_COMMON_GRPC_UTIL_H_

#include <chrono>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "grpcpp/support/status.h"

namespace conveyor {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Infinite past/future times are written as an unset (cleared) Timestamp.
void ToProto(absl::Time t, google::protobuf::Timestamp* out);
// An unset Timestamp (all zero) reads as `if_unset`.
absl::Time FromProto(const google::protobuf::Timestamp& t,
                     absl::Time if_unset = absl::InfinitePast());
void ToProto(absl::Duration d, google::protobuf::Duration* out);
absl::Duration FromProto(const google::protobuf::Duration& d);

absl::Time FromChrono(std::chrono::system_clock::time_point tp);
std::chrono::system_clock::time_point ToChrono(absl::Time t);

// sysexits.h code for a failed call: 64 usage, 65 bad data, 69 unavailable,
// 75 temporary failure, 77 permission, 70 internal.
int ExitCodeFor(const absl::Status& status);

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_GRPC_UTIL_H_
