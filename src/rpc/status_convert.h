// The one place that maps tern::Status <-> grpc::Status (docs/contributing.md, "Errors"). Codes
// have the same numbering on both sides; messages pass through unchanged.
#pragma once

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace tern {

grpc::Status to_grpc_status(const Status& status);
Status from_grpc_status(const grpc::Status& status);

}  // namespace tern
