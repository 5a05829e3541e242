// Wire format of tern's rendezvous store (RendezvousServer <-> TcpRendezvousStore). Internal to
// src/comm; no Torch here.
//
// Every message is a frame: a 4-byte big-endian body length, then the body. A body is one byte
// (the op in a request, the reply code in a reply), a 4-byte big-endian field count, and that
// many fields, each a 4-byte big-endian length and its bytes. The peer reads the length first
// and refuses a frame over its limit before allocating anything for it.
//
// Requests (fields):            Reply fields when kOk:
//   kSet        key value        -
//   kCompareSet key expected new the key's value afterwards (see RendezvousServer)
//   kGet        timeout_ms key   value      (kTimeout when the key did not appear in time)
//   kAdd        key delta        new value  (decimal text, as c10d's TCPStore stores counters)
//   kDelete     key              "1" if the key existed, else "0"
//   kCheck      key...           "1" if every key exists, else "0"
//   kNumKeys    -                number of keys (decimal)
//   kWait       timeout_ms key...  -        (kTimeout when some key did not appear in time)
// timeout_ms is decimal text; 0 waits without a deadline (c10d's kNoTimeout).
// A kError reply carries one field, the message; the server closes the connection after one.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace tern::rendezvous {

enum class Op : uint8_t {
  kSet = 1,
  kCompareSet = 2,
  kGet = 3,
  kAdd = 4,
  kDelete = 5,
  kCheck = 6,
  kNumKeys = 7,
  kWait = 8,
};

enum class Reply : uint8_t {
  kOk = 0,
  kTimeout = 1,
  kError = 2,
};

constexpr size_t kHeaderBytes = 4;

// Bounds on what a server accepts and a client sends. Defaults fit Gloo's and NCCL's
// rendezvous (a few small keys per rank) with a wide margin.
struct Limits {
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = 1 << 20;     // 1 MiB
  size_t max_message_bytes = 4 << 20;   // one frame's body, 4 MiB
  size_t max_keys_per_request = 4096;   // kCheck / kWait
  size_t max_stored_bytes = 256 << 20;  // keys + values held by a server
  size_t max_connections = 1024;
};

struct Message {
  uint8_t code = 0;  // an Op in a request, a Reply in a reply
  std::vector<std::string> fields;
};

inline void put_u32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out->append(b, 4);
}

inline uint32_t get_u32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

// Size of the body encode() writes for these fields.
inline size_t body_size(const std::vector<std::string>& fields) {
  size_t n = 1 + 4;
  for (const auto& f : fields) n += 4 + f.size();
  return n;
}

// The whole frame (header and body). The caller checks body_size() against its limit first.
inline std::string encode(uint8_t code, const std::vector<std::string>& fields) {
  std::string out;
  size_t body = body_size(fields);
  out.reserve(kHeaderBytes + body);
  put_u32(&out, static_cast<uint32_t>(body));
  out.push_back(static_cast<char>(code));
  put_u32(&out, static_cast<uint32_t>(fields.size()));
  for (const auto& f : fields) {
    put_u32(&out, static_cast<uint32_t>(f.size()));
    out.append(f);
  }
  return out;
}

// Parses a frame body; nullopt when it is malformed (lengths past the end, trailing bytes).
inline std::optional<Message> decode(const char* body, size_t size) {
  if (size < 5) return std::nullopt;
  Message m;
  m.code = static_cast<uint8_t>(body[0]);
  uint32_t count = get_u32(body + 1);
  size_t pos = 5;
  // Each field takes at least 4 bytes: bound the count before reserving.
  if (count > (size - pos) / 4) return std::nullopt;
  m.fields.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (size - pos < 4) return std::nullopt;
    uint32_t len = get_u32(body + pos);
    pos += 4;
    if (len > size - pos) return std::nullopt;
    m.fields.emplace_back(body + pos, len);
    pos += len;
  }
  if (pos != size) return std::nullopt;
  return m;
}

}  // namespace tern::rendezvous
