// UTF-8 well-formedness, for text that crosses into protobuf `string` fields (which refuse
// anything else) and for YAML, which tern reads as UTF-8 only. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tern {

// The byte offset of the first ill-formed sequence in `text` (RFC 3629: no overlong forms, no
// UTF-16 surrogates, nothing above U+10FFFF, no truncated sequence), or npos when it is all
// well-formed UTF-8.
size_t first_invalid_utf8(std::string_view text);

// `text` with every ill-formed sequence replaced by U+FFFD (one per bad byte), so that bytes
// from a process (a trainer's log tail) can go into a protobuf `string` field.
std::string to_valid_utf8(std::string_view text);

// Where `offset` lies in `text`, for messages: "line 3, column 7 (byte offset 41: 0xff)".
std::string describe_byte_position(std::string_view text, size_t offset);

}  // namespace tern
