// The checkpoint file format: round trip of every dtype and shape (empty and 0-dim
// included) and metadata; every single-byte flip and every truncation detected; wrong magic,
// newer version, lying lengths and dims (with valid checksums, so the structural checks and
// not the CRCs catch them) refused with a message naming the file.
#include "recovery/checkpoint_format.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "recovery/checkpoint.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

void put_u32(std::string* o, uint32_t v) {
  for (int i = 0; i < 4; ++i) o->push_back(static_cast<char>(v >> (8 * i)));
}
void put_u64(std::string* o, uint64_t v) {
  for (int i = 0; i < 8; ++i) o->push_back(static_cast<char>(v >> (8 * i)));
}

// Builds a file from raw sections with correct checksums, so a test can plant exactly one
// inconsistency. total = 0 means the real length.
std::string craft(const std::vector<std::pair<uint32_t, std::string>>& sections, uint64_t total = 0,
                  uint32_t version = kCheckpointVersion, int64_t sections_override = -1) {
  std::string body;
  for (const auto& [kind, payload] : sections) {
    std::string h;
    put_u32(&h, kind);
    put_u32(&h, 0);
    put_u64(&h, payload.size());
    put_u32(&h, checkpoint_crc32(0, payload.data(), payload.size()));
    put_u32(&h, checkpoint_crc32(0, h.data(), h.size()));
    body += h + payload;
  }
  std::string fh(kCheckpointMagic, 8);
  put_u32(&fh, version);
  put_u32(&fh, sections_override >= 0 ? static_cast<uint32_t>(sections_override)
                                      : static_cast<uint32_t>(sections.size()));
  put_u64(&fh, total ? total : kCheckpointHeaderBytes + body.size());
  put_u32(&fh, 0);
  put_u32(&fh, checkpoint_crc32(0, fh.data(), fh.size()));
  return fh + body;
}

std::string kv(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string o;
  put_u32(&o, static_cast<uint32_t>(entries.size()));
  for (const auto& [k, v] : entries) {
    put_u32(&o, static_cast<uint32_t>(k.size()));
    o += k;
    put_u32(&o, static_cast<uint32_t>(v.size()));
    o += v;
  }
  return o;
}

std::string good_meta() { return kv({{"step", "7"}, {"rank", "0"}, {"world", "1"}}); }

std::string tensor_payload(const std::string& name, uint8_t dtype, std::vector<uint64_t> dims,
                           uint64_t data_len, const std::string& data) {
  std::string o;
  put_u32(&o, static_cast<uint32_t>(name.size()));
  o += name;
  o.push_back(static_cast<char>(dtype));
  o.push_back(static_cast<char>(dims.size()));
  o.append(2, '\0');
  for (uint64_t d : dims) put_u64(&o, d);
  put_u64(&o, data_len);
  return o + data;
}

Status parse_status(const std::string& bytes) {
  return parse_checkpoint(bytes, "/ckpt/x.ckpt").status();
}

void expect_refused(const std::string& bytes, const std::string& needle) {
  Status st = parse_status(bytes);
  ASSERT_FALSE(st.is_ok()) << "accepted; expected: " << needle;
  EXPECT_NE(st.message().find("/ckpt/x.ckpt"), std::string::npos) << st.to_string();
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.to_string();
}

NamedTensors every_dtype() {
  NamedTensors ts;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  ts.emplace_back("f32", at::randn({3, 4}, gen));
  ts.emplace_back("f64", at::randn({2, 3, 2}, gen).to(at::kDouble));
  ts.emplace_back("f16", at::randn({5}, gen).to(at::kHalf));
  ts.emplace_back("bf16", at::randn({2, 2}, gen).to(at::kBFloat16));
  ts.emplace_back("i8", at::randint(-128, 127, {7}, gen).to(at::kChar));
  ts.emplace_back("u8", at::randint(0, 255, {4, 1}, gen).to(at::kByte));
  ts.emplace_back("i16", at::randint(-30000, 30000, {3}, gen).to(at::kShort));
  ts.emplace_back("i32", at::randint(-100000, 100000, {2, 5}, gen).to(at::kInt));
  ts.emplace_back("i64", at::tensor(std::vector<int64_t>{int64_t{1} << 62, int64_t{-5}, int64_t{0}},
                                    at::kLong));
  ts.emplace_back("bool", at::rand({9}, gen) > 0.5);
  ts.emplace_back("scalar", at::scalar_tensor(3.5, at::kFloat));  // 0-dim
  ts.emplace_back("empty", at::empty({0}));                       // no elements
  ts.emplace_back("empty2d", at::empty({4, 0}, at::kLong));
  ts.emplace_back("high_rank", at::arange(64, at::kFloat).reshape({2, 2, 2, 2, 2, 2}));
  ts.emplace_back("special", at::tensor({std::numeric_limits<float>::quiet_NaN(),
                                         std::numeric_limits<float>::infinity(), -0.0f}));
  return ts;
}

class FormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern-format-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(FormatTest, RoundTripsEveryDtypeAndShape) {
  NamedTensors ts = every_dtype();
  CheckpointMeta meta;
  meta.step = 120;
  meta.epoch = 2;
  meta.sampler_position = 4480;
  meta.rank = 3;
  meta.world = 4;
  meta.generation = 1;
  meta.job_id = "j-17";
  meta.extra["summary"] = R"({"loss": 0.25, "pls": 0.001})";
  meta.extra["empty"] = "";
  std::string path = (dir_ / "a.ckpt").string();
  auto w = write_checkpoint_file(path, meta, ts);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  EXPECT_EQ(w->bytes, fs::file_size(path));

  auto r = read_checkpoint_file(path);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->meta.step, 120);
  EXPECT_EQ(r->meta.epoch, 2);
  EXPECT_EQ(r->meta.sampler_position, 4480);
  EXPECT_EQ(r->meta.rank, 3);
  EXPECT_EQ(r->meta.world, 4);
  EXPECT_EQ(r->meta.generation, 1);
  EXPECT_EQ(r->meta.job_id, "j-17");
  EXPECT_EQ(r->meta.extra, meta.extra);
  ASSERT_EQ(r->tensors.size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& [name, want] = ts[i];
    const auto& [got_name, got] = r->tensors[i];
    EXPECT_EQ(got_name, name);
    EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), want.sizes()) << name;
    ASSERT_EQ(got.numel() * got.element_size(), want.numel() * want.element_size()) << name;
    // Bitwise (NaN != NaN under equal()).
    if (want.numel() > 0) {
      EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), want.numel() * want.element_size()), 0)
          << name;
    }
  }
  ASSERT_NE(r->find("scalar"), nullptr);
  EXPECT_EQ(r->find("scalar")->dim(), 0);
  EXPECT_EQ(r->find("missing"), nullptr);

  // The header-only digest equals the full parse's digest and the writer's.
  auto d = checkpoint_file_digest(path);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_EQ(*d, w->digest);
}

TEST_F(FormatTest, NoTensorsRoundTrips) {
  CheckpointMeta meta;
  meta.step = 0;
  meta.rank = -1;
  meta.world = 1;
  std::string path = (dir_ / "empty.ckpt").string();
  ASSERT_TRUE(write_checkpoint_file(path, meta, {}).is_ok());
  auto r = read_checkpoint_file(path);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->tensors.empty());
  EXPECT_EQ(r->meta.rank, -1);
}

TEST_F(FormatTest, WriterRefusesWhatItCannotStoreAndLeavesNoFile) {
  std::string path = (dir_ / "bad.ckpt").string();
  CheckpointMeta meta;
  meta.step = 1;
  auto st = write_checkpoint_file(path, meta, {{"t", at::ones({4, 4}).t()}});  // not contiguous
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("'t'"), std::string::npos);
  st = write_checkpoint_file(path, meta, {{"c", at::ones({2}, at::kComplexFloat)}});
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  st = write_checkpoint_file(path, meta, {{"a", at::ones({1})}, {"a", at::ones({1})}});
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("duplicate"), std::string::npos);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir_)) << "temp file left behind";
}

TEST(CheckpointFormat, EverySingleByteFlipIsDetected) {
  CheckpointMeta meta;
  meta.step = 3;
  meta.rank = 0;
  meta.world = 1;
  meta.job_id = "j";
  at::Tensor a = at::arange(6, at::kFloat).reshape({2, 3});
  at::Tensor b = at::tensor(std::vector<int64_t>{1, 0}).to(at::kBool);
  std::vector<TensorSpan> spans = {
      {"a", DType::kFloat32, {2, 3}, a.data_ptr(), 24},
      {"b", DType::kBool, {2}, b.data_ptr(), 2},
  };
  auto enc = encode_checkpoint_to_string(meta, spans);
  ASSERT_TRUE(enc.is_ok());
  const std::string good = *enc;
  ASSERT_TRUE(parse_checkpoint(good, "x").is_ok());
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit : {0, 7}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      Status st = parse_checkpoint(bad, "/ckpt/x.ckpt").status();
      ASSERT_FALSE(st.is_ok()) << "flip of bit " << bit << " at byte " << i << " not detected";
      EXPECT_NE(st.message().find("/ckpt/x.ckpt"), std::string::npos);
    }
  }
}

TEST(CheckpointFormat, EveryTruncationAndAppendIsDetected) {
  CheckpointMeta meta;
  meta.step = 3;
  meta.rank = 0;
  meta.world = 1;
  at::Tensor a = at::arange(10, at::kLong);
  auto enc = encode_checkpoint_to_string(meta, {{"a", DType::kInt64, {10}, a.data_ptr(), 80}});
  ASSERT_TRUE(enc.is_ok());
  for (size_t n = 0; n < enc->size(); ++n) {
    Status st = parse_status(enc->substr(0, n));
    ASSERT_FALSE(st.is_ok()) << "truncation to " << n << " bytes accepted";
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  }
  expect_refused(*enc + "x", "trailing bytes");
  expect_refused(enc->substr(0, 20), "truncated");
  expect_refused(enc->substr(0, enc->size() - 1), "truncated");
}

TEST(CheckpointFormat, WrongMagicAndNewerVersionAreNamed) {
  std::string good = craft({{1, good_meta()}});
  ASSERT_TRUE(parse_status(good).is_ok()) << parse_status(good).to_string();
  std::string bad = good;
  bad[0] = 'X';
  expect_refused(bad, "wrong magic");
  expect_refused(std::string(64, '\0'), "wrong magic");
  Status st = parse_status(craft({{1, good_meta()}}, 0, 2));
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("version 2"), std::string::npos) << st.to_string();
}

TEST(CheckpointFormat, LyingLengthsWithValidChecksumsAreRefused) {
  std::string meta = good_meta();
  // total_length larger / smaller than the file.
  std::string f = craft({{1, meta}});
  expect_refused(craft({{1, meta}}, f.size() + 100), "truncated");
  expect_refused(craft({{1, meta}}, f.size() - 1), "trailing bytes");
  // A section count the file cannot hold (no allocation from it).
  expect_refused(craft({{1, meta}}, 0, kCheckpointVersion, 0xffffffff), "section count");
  expect_refused(craft({{1, meta}}, 0, kCheckpointVersion, 0), "no sections");
  // Section length past the end: forge a section header whose length lies.
  {
    std::string body;
    std::string h;
    put_u32(&h, 1);
    put_u32(&h, 0);
    put_u64(&h, uint64_t{1} << 40);
    put_u32(&h, 0);
    put_u32(&h, checkpoint_crc32(0, h.data(), h.size()));
    std::string fh(kCheckpointMagic, 8);
    put_u32(&fh, kCheckpointVersion);
    put_u32(&fh, 1);
    put_u64(&fh, kCheckpointHeaderBytes + h.size() + 8);
    put_u32(&fh, 0);
    put_u32(&fh, checkpoint_crc32(0, fh.data(), fh.size()));
    expect_refused(fh + h + std::string(8, 'z'), "runs past the end");
  }
  // Meta: entry count larger than the section, a string running past it, a non-integer.
  std::string lying;
  put_u32(&lying, 1000000);
  expect_refused(craft({{1, lying}}), "meta entry count");
  std::string runaway;
  put_u32(&runaway, 1);
  put_u32(&runaway, 0xfffffff0u);
  runaway += "step";
  expect_refused(craft({{1, runaway}}), "runs past the section end");
  expect_refused(craft({{1, kv({{"step", "7x"}, {"rank", "0"}, {"world", "1"}})}}),
                 "not an integer");
  expect_refused(
      craft({{1, kv({{"step", "99999999999999999999"}, {"rank", "0"}, {"world", "1"}})}}),
      "not an integer");
  expect_refused(craft({{1, kv({{"rank", "0"}, {"world", "1"}})}}), "'step' missing");
  expect_refused(craft({{1, kv({{"step", "1"}, {"step", "1"}, {"rank", "0"}, {"world", "1"}})}}),
                 "appears twice");
  expect_refused(craft({{1, kv({{"step", "1"}, {"rank", "0"}, {"world", "1"}, {"bogus", "1"}})}}),
                 "unknown meta key");
  // Sections out of order or of unknown kind.
  expect_refused(craft({{2, tensor_payload("a", 1, {1}, 4, "abcd")}}), "not the meta section");
  expect_refused(craft({{1, meta}, {1, meta}}), "second meta section");
  expect_refused(craft({{1, meta}, {9, "x"}}), "unknown kind");
}

TEST(CheckpointFormat, LyingTensorHeadersWithValidChecksumsAreRefused) {
  std::string meta = good_meta();
  auto with = [&](const std::string& payload) { return craft({{1, meta}, {2, payload}}); };
  ASSERT_TRUE(parse_status(with(tensor_payload("a", 1, {2}, 8, std::string(8, 'q')))).is_ok());
  // Huge dims whose product overflows, or matches a data length the file does not hold.
  expect_refused(with(tensor_payload("a", 1, {uint64_t{1} << 40, uint64_t{1} << 40}, 0, "")),
                 "overflows");
  expect_refused(with(tensor_payload("a", 1, {uint64_t{1} << 30}, uint64_t{1} << 32, "")),
                 "bytes left in the section");
  expect_refused(with(tensor_payload("a", 1, {3}, 8, std::string(8, 'q'))), "does not match");
  expect_refused(with(tensor_payload("a", 1, {~uint64_t{0}}, 4, "abcd")), "negative dim");
  expect_refused(with(tensor_payload("a", 42, {1}, 4, "abcd")), "unknown dtype code 42");
  expect_refused(with(tensor_payload("a", 1, std::vector<uint64_t>(40, 1), 4, "abcd")),
                 "more than 32");
  expect_refused(with(tensor_payload("", 1, {1}, 4, "abcd")), "empty name");
  expect_refused(with(tensor_payload("b", 10, {2}, 2, std::string("\x01\x02", 2))),
                 "bool value other than 0 or 1");
  expect_refused(craft({{1, meta},
                        {2, tensor_payload("a", 1, {1}, 4, "abcd")},
                        {2, tensor_payload("a", 1, {1}, 4, "abcd")}}),
                 "repeated");
  std::string name_runaway;
  put_u32(&name_runaway, 0x7fffffff);
  expect_refused(with(name_runaway + "ab"), "name runs past");
}

TEST_F(FormatTest, DigestOfDamagedFileFailsWithTheFileNamed) {
  std::string path = (dir_ / "d.ckpt").string();
  CheckpointMeta meta;
  meta.step = 1;
  ASSERT_TRUE(write_checkpoint_file(path, meta, {{"x", at::ones({100})}}).is_ok());
  fs::resize_file(path, fs::file_size(path) - 10);
  auto d = checkpoint_file_digest(path);
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find(path), std::string::npos);
  EXPECT_NE(d.status().message().find("truncated"), std::string::npos) << d.status().to_string();
  EXPECT_EQ(checkpoint_file_digest((dir_ / "none").string()).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern
