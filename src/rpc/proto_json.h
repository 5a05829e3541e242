#pragma once
// One JSON style for every `--json` output and every HTTP API that shows a protobuf message:
//   - field names as in the .proto file (snake_case), every field present (defaults included)
//     except unset message fields and unset `optional` ones, which are left out;
//   - numbers as JSON numbers, 64-bit integers included (protobuf's own JSON mapping prints
//     int64 as strings; tern's counters and steps stay far below 2^53, where a double is exact);
//   - enum values by their short name, without the enum's prefix: JOB_STATE_SUCCEEDED ->
//     "SUCCEEDED", WORKER_STATE_READY -> "READY" (the same names `tern run --json` prints);
//   - google.protobuf.Timestamp as an RFC 3339 string, Duration as seconds (a number);
//   - bytes as base64, maps as objects.
#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>
#include <string>

namespace tern {

nlohmann::json proto_to_json(const google::protobuf::Message& message);

// The short name of an enum value: the value's name without its enum's prefix
// (JobState / JOB_STATE_SUCCEEDED -> "SUCCEEDED"); the full name when it has no such prefix.
std::string short_enum_name(const google::protobuf::EnumValueDescriptor& value);
// The same for a number of enum `type`; the number itself for a value the type does not know.
std::string short_enum_name(const google::protobuf::EnumDescriptor& type, int number);

// Prints `j`; a string that is not valid UTF-8 (a log line from a peer) prints with U+FFFD in
// place of its bad bytes instead of throwing.
std::string dump_json(const nlohmann::json& j, int indent = -1);

}  // namespace tern
