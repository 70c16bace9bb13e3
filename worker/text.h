// Text helpers for what the worker sends in proto `string` fields (progress
// messages, error text, reasons): protobuf refuses to parse a string field
// holding invalid UTF-8, so one bad byte from a handler or a command's stderr
// would fail a whole batched call.
//
// Thread-safe (pure functions).
#ifndef CONVEYOR_WORKER_TEXT_H_
#define CONVEYOR_WORKER_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace conveyor::worker {

// `text` with every byte that is not part of a well-formed UTF-8 sequence
// replaced by '?', cut at a character boundary to at most `max_bytes`.
std::string ValidUtf8(absl::string_view text, size_t max_bytes);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_TEXT_H_
