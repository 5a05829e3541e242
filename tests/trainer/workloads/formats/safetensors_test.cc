// safetensors: round trips of every dtype, files written byte for byte by hand (the reader and
// the writer checked against the format, not only against each other), and every class of bad
// input refused with an error that names the file.
#include "trainer/workloads/formats/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/utf8.h"
#include "trainer/workloads/formats/safetensors_header.h"
#include "trainer/workloads/formats/st_test_util.h"

namespace tern {
namespace {

using testing::fresh_dir;
using testing::image;
using testing::le64;
using testing::read_bytes;
using testing::write_bytes;

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
  const std::string path = fresh_dir("roundtrip") + "/all.safetensors";
  const std::vector<at::ScalarType> dtypes = {at::kDouble, at::kFloat, at::kHalf,  at::kBFloat16,
                                              at::kLong,   at::kInt,   at::kShort, at::kChar,
                                              at::kByte,   at::kBool};
  NamedTensors in;
  for (auto dt : dtypes) {
    // Values that use each type's range: negatives, fractions where the type has them.
    at::Tensor base = at::arange(-7, 17, at::kDouble).reshape({2, 3, 4}) * 1.25;
    at::Tensor t = dt == at::kBool ? base.gt(0) : dt == at::kByte ? base.abs().to(dt) : base.to(dt);
    in.emplace_back(std::string("t_") + c10::toString(dt), t);
  }
  in.emplace_back("scalar", at::scalar_tensor(3.5, at::kFloat));
  in.emplace_back("empty", at::zeros({0, 5}, at::kLong));
  in.emplace_back("strided", at::arange(12, at::kInt).reshape({3, 4}).t());  // not contiguous
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xc3\xa9"}};
  ASSERT_TRUE(write_safetensors(path, in, meta).is_ok());

  auto out = read_safetensors_file(path);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out->metadata, meta);
  ASSERT_EQ(out->tensors.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(in[i].first);
    EXPECT_EQ(out->tensors[i].first, in[i].first);  // file order = written order
    const at::Tensor& got = out->tensors[i].second;
    EXPECT_EQ(got.scalar_type(), in[i].second.scalar_type());
    EXPECT_EQ(got.sizes(), in[i].second.sizes());
    EXPECT_TRUE(got.is_contiguous());
    at::Tensor want = in[i].second.contiguous();
    ASSERT_EQ(got.nbytes(), want.nbytes());
    EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), want.nbytes()), 0);
  }
  // The data area starts 8-byte aligned (the header is padded with spaces).
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(Safetensors, ReadsAFileWrittenByHand) {
  const std::string path = fresh_dir("byhand") + "/hand.safetensors";
  // Header keys in a different order from the data, metadata last, JSON whitespace: all legal.
  const std::string header =
      "{ \"b\": {\"dtype\":\"I16\",\"shape\":[1,2],\"data_offsets\":[8,12]},\n"
      "  \"a\": {\"shape\":[2],\"dtype\":\"F32\",\"data_offsets\":[0,8]},\n"
      "  \"__metadata__\": {\"k\": \"v\"} }   ";
  std::string data;
  data += std::string("\x00\x00\xc0\x3f", 4);  // 1.5f
  data += std::string("\x00\x00\x00\xc0", 4);  // -2.0f
  data += std::string("\x07\x00", 2);          // 7
  data += std::string("\xfd\xff", 2);          // -3
  write_bytes(path, image(header, data));

  auto f = read_safetensors_file(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  ASSERT_EQ(f->tensors.size(), 2u);
  EXPECT_EQ(f->tensors[0].first, "a");  // data order
  EXPECT_EQ(f->tensors[1].first, "b");
  EXPECT_EQ(f->names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f->metadata.at("k"), "v");
  at::Tensor a = f->tensors[0].second, b = f->tensors[1].second;
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_EQ(a.sizes(), at::IntArrayRef({2}));
  EXPECT_FLOAT_EQ(a[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(a[1].item<float>(), -2.0f);
  EXPECT_EQ(b.scalar_type(), at::kShort);
  EXPECT_EQ(b.sizes(), at::IntArrayRef({1, 2}));
  EXPECT_EQ(b[0][0].item<int16_t>(), 7);
  EXPECT_EQ(b[0][1].item<int16_t>(), -3);

  // `only` reads just the named tensors but still lists them all.
  auto just_b = read_safetensors_file(path, {"b", "missing"});
  ASSERT_TRUE(just_b.is_ok());
  ASSERT_EQ(just_b->tensors.size(), 1u);
  EXPECT_EQ(just_b->tensors[0].first, "b");
  EXPECT_EQ(just_b->names.size(), 2u);
}

TEST(Safetensors, WritesTheFormatByteForByte) {
  const std::string path = fresh_dir("bytes") + "/w.safetensors";
  NamedTensors t = {{"x", at::tensor({1, 2, 255}, at::kByte)},
                    {"y", at::tensor({-1.0}, at::kDouble)}};
  ASSERT_TRUE(write_safetensors(path, t, {{"m", "1"}}).is_ok());
  std::string header =
      "{\"__metadata__\":{\"m\":\"1\"},"
      "\"x\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
      "\"y\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[3,11]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string expected = image(
      header, std::string("\x01\x02\xff", 3) + std::string("\x00\x00\x00\x00\x00\x00\xf0\xbf", 8));
  EXPECT_EQ(read_bytes(path), expected);
}

struct BadCase {
  const char* what;
  std::string bytes;
  const char* says;  // a phrase the error must contain
};

std::vector<BadCase> bad_cases() {
  const std::string f32x2 = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string eight(8, '\0');
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offs) {
    return R"({"t":{"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offs +
           "}}";
  };
  std::vector<BadCase> c = {
      {"empty file", "", "shorter than the 8-byte header length"},
      {"7 bytes", std::string(7, '\0'), "shorter than the 8-byte header length"},
      {"length past the end", le64(100) + "{}", "runs past the end of the file"},
      {"length over the cap", le64((100ull << 20) + 1) + "{}", "larger than the cap"},
      {"length 2^64-1", le64(~0ull) + "{}", "larger than the cap"},
      {"empty header", image(""), "starting with '{'"},
      {"header not an object", image("[1,2]"), "starting with '{'"},
      {"header leading space", image(" {}"), "starting with '{'"},
      {"not JSON", image("{\"t\": nope}"), "not valid JSON"},
      {"truncated JSON", image("{\"t\": {\"dtype\""), "not valid JSON"},
      {"two JSON values", image("{} {}"), "not valid JSON"},
      {"NUL in the header", image(std::string("{}\0", 3)), "NUL byte"},
      {"NUL then junk", image(std::string("{}\0junk", 7)), "NUL byte"},
      {"name not UTF-8", image("{\"\xff\":{}}"), "not valid JSON"},
      {"long name not UTF-8", image("{\"" + std::string(5000, 'n') + "\xff\":{}}"),
       "not valid JSON"},
      {"long name", image("{\"" + std::string(5000, 'n') + "\":1}"), "nnnn..."},
      {"long value", image("{\"t\":\"" + std::string(5000, 'v') + "\"}"), "vvvv..."},
      {"deep nesting", image("{\"t\":" + std::string(100, '[') + std::string(100, ']') + "}"),
       "nests deeper"},
      {"entry not an object", image(R"({"t":[1]})"), "must be an object"},
      {"entry missing dtype", image(R"({"t":{"shape":[],"data_offsets":[0,0]}})"), "has no dtype"},
      {"entry missing shape", image(R"({"t":{"dtype":"F32","data_offsets":[0,0]}})"),
       "has no shape"},
      {"entry missing offsets", image(R"({"t":{"dtype":"F32","shape":[]}})"),
       "has no data_offsets"},
      {"unknown field", image(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":1}})"),
       "unknown field 'x'"},
      {"empty name", image(R"({"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})"),
       "empty name"},
      {"dtype not a string", image(entry("4", "[2]", "[0,8]"), eight), "dtype must be a string"},
      {"dtype unknown", image(entry("\"F33\"", "[2]", "[0,8]"), eight), "'F33' is unknown"},
      {"dtype lowercase", image(entry("\"f32\"", "[2]", "[0,8]"), eight), "'f32' is unknown"},
      {"dtype unsupported U16", image(entry("\"U16\"", "[4]", "[0,8]"), eight),
       "U16 is not supported"},
      {"dtype unsupported F8", image(entry("\"F8_E4M3\"", "[8]", "[0,8]"), eight),
       "F8_E4M3 is not supported"},
      {"shape not an array", image(entry("\"F32\"", "2", "[0,8]"), eight),
       "shape must be an array"},
      {"shape float", image(entry("\"F32\"", "[2.0]", "[0,8]"), eight), "must be an integer"},
      {"shape string", image(entry("\"F32\"", "[\"2\"]", "[0,8]"), eight), "must be an integer"},
      {"shape negative", image(entry("\"F32\"", "[-2]", "[0,8]"), eight), "must be >= 0"},
      {"shape > uint64", image(entry("\"F32\"", "[18446744073709551616]", "[0,8]"), eight),
       "must be an integer"},
      {"shape product overflows",
       image(entry("\"F32\"", "[4294967296,4294967296]", "[0,8]"), eight), "overflows"},
      {"bytes overflow", image(entry("\"F64\"", "[2305843009213693952]", "[0,8]"), eight),
       "overflows"},
      {"overflow behind a zero", image(entry("\"F32\"", "[0,4294967296,4294967296]", "[0,0]")),
       "overflows"},
      {"offsets not an array", image(entry("\"F32\"", "[2]", "8"), eight),
       "data_offsets must be an array"},
      {"offsets three", image(entry("\"F32\"", "[2]", "[0,8,8]"), eight),
       "data_offsets must be an array"},
      {"offsets negative", image(entry("\"F32\"", "[2]", "[-8,0]"), eight), "must be >= 0"},
      {"offsets float", image(entry("\"F32\"", "[2]", "[0,8.0]"), eight), "must be an integer"},
      {"offsets reversed", image(entry("\"F32\"", "[0]", "[8,0]"), eight), "end before begin"},
      {"offsets too short", image(entry("\"F32\"", "[2]", "[0,4]"), eight),
       "span 4 bytes, but F32 [2] needs 8"},
      {"offsets past the data", image(entry("\"F32\"", "[2]", "[4,12]"), eight),
       "run past the data area"},
      {"data missing", image(f32x2, "\x01\x02\x03"), "run past the data area"},
      {"trailing bytes", image(f32x2, eight + "x"), "at the end of the data area belong to no"},
      {"hole", image(entry("\"F32\"", "[1]", "[4,8]"), eight), "belong to no tensor (a hole"},
      {"overlap",
       image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
             eight),
       "overlap tensor 'a'"},
      {"same range twice",
       image(R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
             eight),
       "overlap"},
      {"duplicate name",
       image(R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
             R"("a":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}})",
             eight),
       "key 'a' twice"},
      {"duplicate field",
       image(R"({"a":{"dtype":"I32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight),
       "key 'dtype' twice"},
      {"metadata not an object", image(R"({"__metadata__":[]})"), "__metadata__ must be an object"},
      {"metadata value not a string", image(R"({"__metadata__":{"a":1}})"), "must be a string"},
      {"bool not 0/1", image(entry("\"BOOL\"", "[2]", "[0,2]"), std::string("\x01\x02", 2)),
       "holds byte 2"},
  };
  return c;
}

TEST(Safetensors, RefusesEveryClassOfBadInputNamingTheFile) {
  const std::string dir = fresh_dir("bad");
  int i = 0;
  for (const auto& c : bad_cases()) {
    SCOPED_TRACE(c.what);
    const std::string path = dir + "/case" + std::to_string(i++) + ".safetensors";
    write_bytes(path, c.bytes);
    auto r = read_safetensors(path);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
    EXPECT_TRUE(starts_with(r.status().message(), path + ": ")) << r.status().message();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().message();
    // What the file holds is quoted clipped and as valid UTF-8 (errors go into protobuf strings).
    EXPECT_LT(r.status().message().size(), path.size() + 512) << r.status().message();
    EXPECT_EQ(first_invalid_utf8(r.status().message()), std::string::npos) << r.status().message();
    // The in-memory parser (what the fuzzer drives) agrees.
    auto p = parse_safetensors_image(c.bytes, "mem");
    EXPECT_FALSE(p.is_ok());
  }
}

TEST(Safetensors, MissingFileAndDirectory) {
  const std::string dir = fresh_dir("missing");
  auto r = read_safetensors(dir + "/nope.safetensors");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(starts_with(r.status().message(), dir + "/nope.safetensors: "));
  auto d = read_safetensors(dir);
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("not a regular file"), std::string::npos);
  // A FIFO is refused, not waited on.
  const std::string fifo = dir + "/fifo.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto p = read_safetensors(fifo);
  ASSERT_FALSE(p.is_ok());
  EXPECT_TRUE(starts_with(p.status().message(), fifo + ": not a regular file"))
      << p.status().message();
}

TEST(Safetensors, AcceptsEdgeCasesOfTheFormat) {
  const std::string dir = fresh_dir("edge");
  // No tensors at all; only metadata; zero-byte tensors sharing an offset.
  const std::vector<std::pair<std::string, size_t>> ok = {
      {image("{}"), 0},
      {image(R"({"__metadata__":{}})"), 0},
      {image(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
             R"("w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},)"
             R"("e":{"dtype":"F64","shape":[4,0],"data_offsets":[2,2]}})",
             "ab"),
       3},
  };
  int i = 0;
  for (const auto& [bytes, count] : ok) {
    const std::string path = dir + "/ok" + std::to_string(i++) + ".safetensors";
    write_bytes(path, bytes);
    auto r = read_safetensors(path);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->size(), count);
  }
}

TEST(Safetensors, WriterRefusesWhatTheReaderWouldAndKeepsTheOldFile) {
  const std::string path = fresh_dir("writer") + "/w.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"a", at::ones({2})}}).is_ok());
  const std::string before = read_bytes(path);
  const std::vector<std::pair<NamedTensors, std::string>> bad = {
      {{{"a", at::ones({1})}, {"a", at::ones({1})}}, "twice"},
      {{{"__metadata__", at::ones({1})}}, "__metadata__"},
      {{{"", at::ones({1})}}, "empty name"},
      {{{"c", at::ones({1}, at::kComplexFloat)}}, "cannot hold"},
      {{{"u", at::Tensor()}}, "undefined"},
      {{{"\xff", at::ones({1})}}, "cannot encode"},
  };
  for (const auto& [tensors, says] : bad) {
    SCOPED_TRACE(says);
    Status st = write_safetensors(path, tensors);
    ASSERT_FALSE(st.is_ok());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(starts_with(st.message(), path + ": ")) << st.message();
    EXPECT_NE(st.message().find(says), std::string::npos) << st.message();
    EXPECT_EQ(read_bytes(path), before);
  }
  Status meta = write_safetensors(path, {{"a", at::ones({1})}}, {{"k", "\xff"}});
  EXPECT_FALSE(meta.is_ok());
  EXPECT_EQ(read_bytes(path), before);
  // A directory that does not exist: an error naming the path, nothing written.
  Status nodir = write_safetensors(path + ".d/x.safetensors", {{"a", at::ones({1})}});
  EXPECT_FALSE(nodir.is_ok());
  EXPECT_NE(nodir.message().find(path + ".d/x.safetensors"), std::string::npos) << nodir.message();
}

}  // namespace
}  // namespace tern
