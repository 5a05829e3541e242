#include "rpc/proto_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

#include <cctype>

namespace tern {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// JobState -> "JOB_STATE_"
std::string enum_prefix(const std::string& type_name) {
  std::string out;
  for (size_t i = 0; i < type_name.size(); ++i) {
    const char c = type_name[i];
    if (std::isupper(static_cast<unsigned char>(c)) && i > 0) out.push_back('_');
    out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return out + "_";
}

std::string base64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) |
                       (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(k[(v >> s) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out.push_back(k[(v >> 18) & 63]);
    out.push_back(k[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? k[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

nlohmann::json scalar(const Message& m, const Reflection& r, const FieldDescriptor& f, int index) {
  const bool rep = f.is_repeated();
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r.GetRepeatedInt32(m, &f, index) : r.GetInt32(m, &f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r.GetRepeatedInt64(m, &f, index) : r.GetInt64(m, &f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r.GetRepeatedUInt32(m, &f, index) : r.GetUInt32(m, &f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r.GetRepeatedUInt64(m, &f, index) : r.GetUInt64(m, &f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r.GetRepeatedDouble(m, &f, index) : r.GetDouble(m, &f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r.GetRepeatedFloat(m, &f, index) : r.GetFloat(m, &f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r.GetRepeatedBool(m, &f, index) : r.GetBool(m, &f);
    case FieldDescriptor::CPPTYPE_ENUM:  // by number: an unknown value keeps its number
      return short_enum_name(*f.enum_type(),
                             rep ? r.GetRepeatedEnumValue(m, &f, index) : r.GetEnumValue(m, &f));
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r.GetRepeatedString(m, &f, index) : r.GetString(m, &f);
      if (f.type() == FieldDescriptor::TYPE_BYTES) return base64(s);
      return s;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return proto_to_json(rep ? r.GetRepeatedMessage(m, &f, index) : r.GetMessage(m, &f));
  }
  return nullptr;
}

}  // namespace

std::string short_enum_name(const google::protobuf::EnumValueDescriptor& value) {
  const std::string& name = value.name();
  const std::string prefix = enum_prefix(value.type()->name());
  return name.rfind(prefix, 0) == 0 && name.size() > prefix.size() ? name.substr(prefix.size())
                                                                   : name;
}

std::string short_enum_name(const google::protobuf::EnumDescriptor& type, int number) {
  const auto* v = type.FindValueByNumber(number);
  return v != nullptr ? short_enum_name(*v) : std::to_string(number);
}

nlohmann::json proto_to_json(const Message& m) {
  const auto* d = m.GetDescriptor();
  if (d->full_name() == "google.protobuf.Timestamp") {
    return google::protobuf::util::TimeUtil::ToString(
        static_cast<const google::protobuf::Timestamp&>(m));
  }
  if (d->full_name() == "google.protobuf.Duration") {
    const auto& du = static_cast<const google::protobuf::Duration&>(m);
    return static_cast<double>(du.seconds()) + du.nanos() * 1e-9;
  }
  const Reflection& r = *m.GetReflection();
  nlohmann::json out = nlohmann::json::object();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor& f = *d->field(i);
    if (f.is_map()) {
      nlohmann::json obj = nlohmann::json::object();
      const FieldDescriptor* kf = f.message_type()->map_key();
      const FieldDescriptor* vf = f.message_type()->map_value();
      for (int k = 0; k < r.FieldSize(m, &f); ++k) {
        const Message& entry = r.GetRepeatedMessage(m, &f, k);
        const Reflection& er = *entry.GetReflection();
        nlohmann::json key = scalar(entry, er, *kf, 0);
        obj[key.is_string() ? key.get<std::string>() : key.dump()] = scalar(entry, er, *vf, 0);
      }
      out[f.name()] = std::move(obj);
    } else if (f.is_repeated()) {
      nlohmann::json arr = nlohmann::json::array();
      for (int k = 0; k < r.FieldSize(m, &f); ++k) arr.push_back(scalar(m, r, f, k));
      out[f.name()] = std::move(arr);
    } else if (f.has_presence() && !r.HasField(m, &f)) {
      continue;  // an unset message or `optional` field is left out
    } else {
      out[f.name()] = scalar(m, r, f, 0);
    }
  }
  return out;
}

std::string dump_json(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tern
