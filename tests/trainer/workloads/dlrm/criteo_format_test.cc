// The Criteo format without Torch (criteo_format.h): the line parser over every field kind and
// every defect, the splitter over every line ending and chunking, the malformed-line policy
// (skip, fail, the count and fraction bounds) and the whole-file scan.
#include "trainer/workloads/dlrm/criteo_format.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace tern {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/criteo_format_" + std::to_string(::getpid()) + "_" + name;
}

// A well-formed row: label, 13 integers (some negative, some missing), 26 categories (some
// missing), all different per seed.
CriteoRow make_row(int seed) {
  CriteoRow r;
  r.label = seed % 2 == 1;
  for (int i = 0; i < kCriteoIntFields; ++i) {
    r.int_present[i] = (seed + i) % 5 != 0;
    r.ints[i] = r.int_present[i] ? (seed * 31 + i * 7) % 200 - 3 : 0;
  }
  for (int t = 0; t < kCriteoCatFields; ++t) {
    r.cats[t] = (seed + t) % 7 == 0 ? kCriteoMissingCategory
                                    : static_cast<uint32_t>(seed * 2654435761u + t);
  }
  return r;
}

// The fields of a well-formed line, to break one at a time.
std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    size_t e = line.find('\t', b);
    out.push_back(line.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}
std::string join(const std::vector<std::string>& f) {
  std::string s;
  for (size_t i = 0; i < f.size(); ++i) s += (i ? "\t" : "") + f[i];
  return s;
}

CriteoLineResult parse(const std::string& line) {
  CriteoRow row;
  return parse_criteo_line(line, &row);
}

TEST(CriteoLine, ParsesEveryFieldAndRoundTrips) {
  for (int seed = 0; seed < 50; ++seed) {
    const CriteoRow want = make_row(seed);
    const std::string line = format_criteo_line(want);
    CriteoRow got;
    CriteoLineResult r = parse_criteo_line(line, &got);
    ASSERT_TRUE(r.ok()) << line << ": " << r.message;
    EXPECT_EQ(got, want) << line;
  }
  // Upper- and lower-case hex, 1 to 16 digits; the int64 extremes.
  std::vector<std::string> f = fields_of(format_criteo_line(make_row(1)));
  f[1] = std::to_string(std::numeric_limits<int64_t>::min());
  f[2] = std::to_string(std::numeric_limits<int64_t>::max());
  f[3] = "-0";
  f[14] = "A";
  f[15] = "ffffffffFFFFFFFF";
  f[16] = "00000000";
  CriteoRow row;
  ASSERT_TRUE(parse_criteo_line(join(f), &row).ok());
  EXPECT_EQ(row.ints[0], std::numeric_limits<int64_t>::min());
  EXPECT_EQ(row.ints[1], std::numeric_limits<int64_t>::max());
  EXPECT_EQ(row.ints[2], 0);
  EXPECT_EQ(row.cats[0], 0xAu);
  EXPECT_EQ(row.cats[1], std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(row.cats[2], 0u);
}

TEST(CriteoLine, EmptyFieldsAreMissingNotMalformed) {
  // Every integer and every category empty: a well-formed line (the label is required).
  std::string line = "1" + std::string(kCriteoFields - 1, '\t');
  CriteoRow row;
  CriteoLineResult r = parse_criteo_line(line, &row);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_TRUE(row.label);
  for (int i = 0; i < kCriteoIntFields; ++i) {
    EXPECT_FALSE(row.int_present[i]);
    EXPECT_EQ(criteo_dense_value(row.ints[i], row.int_present[i]), 0.0f);
  }
  for (int t = 0; t < kCriteoCatFields; ++t) EXPECT_EQ(row.cats[t], kCriteoMissingCategory);
}

TEST(CriteoLine, NegativeIntegersClampToZeroBeforeTheLog) {
  for (int64_t raw : {int64_t{-1}, int64_t{-3}, std::numeric_limits<int64_t>::min()}) {
    EXPECT_EQ(criteo_dense_value(raw, true), 0.0f) << raw;
  }
  EXPECT_EQ(criteo_dense_value(0, true), 0.0f);
  for (int64_t raw : {int64_t{1}, int64_t{10}, int64_t{123456789}}) {
    EXPECT_FLOAT_EQ(criteo_dense_value(raw, true),
                    static_cast<float>(std::log1p(static_cast<double>(raw))))
        << raw;
  }
  EXPECT_TRUE(std::isfinite(criteo_dense_value(std::numeric_limits<int64_t>::max(), true)));
}

// One defect per line, each named with the field and a quote of the offending value.
TEST(CriteoLine, EveryDefectIsClassifiedAndNamed) {
  const std::string good = format_criteo_line(make_row(3));
  struct Case {
    std::string line;
    CriteoDefect defect;
    std::string says;
  };
  std::vector<Case> cases;
  auto with = [&](int field, const std::string& value) {
    std::vector<std::string> f = fields_of(good);
    f[field] = value;
    return join(f);
  };
  cases.push_back({"", CriteoDefect::kFieldCount, "an empty line"});
  cases.push_back(
      {"1\t2\t3", CriteoDefect::kFieldCount, "expected 40 tab-separated fields, got 3"});
  cases.push_back({good + "\t", CriteoDefect::kFieldCount, "got 41"});
  cases.push_back({good.substr(0, good.rfind('\t')), CriteoDefect::kFieldCount, "got 39"});
  for (std::string label : {"2", "-1", "", "01", "1 ", "0.0", "yes", "\xff"}) {
    cases.push_back({with(0, label), CriteoDefect::kLabel, "label must be 0 or 1"});
  }
  for (std::string v : {"12a", "1.5", " 7", "7 ", "+3", "--1", "-", "0x10", "1e3"}) {
    cases.push_back({with(4, v), CriteoDefect::kInteger, "integer feature I4 is not an integer"});
  }
  for (std::string v : {"9223372036854775808", "-9223372036854775809", "99999999999999999999999"}) {
    cases.push_back(
        {with(13, v), CriteoDefect::kInteger, "integer feature I13 is outside the int64 range"});
  }
  for (std::string v : {"zz12ab34", "12345678901234567", "0x1f", "-1a", "12 34", "g"}) {
    cases.push_back({with(14 + 9, v), CriteoDefect::kCategory,
                     "categorical feature C10 is not 1 to 16 hex digits"});
  }
  cases.push_back(
      {good + "\r", CriteoDefect::kCategory, "C26"});  // a '\r' the splitter left is data
  cases.push_back(
      {with(5, "1" + std::string(1, '\0') + "2"), CriteoDefect::kNul, "a NUL byte at byte "});
  cases.push_back({with(20, std::string(kCriteoMaxLineBytes, 'a')), CriteoDefect::kOverlong,
                   "bytes is longer"});
  // Precedence: overlong before NUL before the field count before the fields, in order.
  cases.push_back({std::string(kCriteoMaxLineBytes + 1, '\0'), CriteoDefect::kOverlong, "longer"});
  cases.push_back({std::string(1, '\0') + "\tx", CriteoDefect::kNul, "byte 1 "});
  cases.push_back({"7\tx\t", CriteoDefect::kFieldCount, "got 3"});
  {
    std::vector<std::string> f = fields_of(good);
    f[0] = "9";
    f[1] = "x";
    f[30] = "z";
    cases.push_back({join(f), CriteoDefect::kLabel, "label"});
    f[0] = "0";
    cases.push_back({join(f), CriteoDefect::kInteger, "I1"});
  }
  for (const Case& c : cases) {
    CriteoLineResult r = parse(c.line);
    EXPECT_EQ(r.defect, c.defect) << "line '" << c.line.substr(0, 80) << "': " << r.message;
    EXPECT_NE(r.message.find(c.says), std::string::npos) << r.message;
    // Messages are one printable-ASCII line, bounded, whatever the line held.
    EXPECT_LT(r.message.size(), 200u) << r.message;
    for (char ch : r.message) {
      EXPECT_TRUE(ch >= 0x20 && ch <= 0x7e)
          << "byte " << static_cast<int>(static_cast<unsigned char>(ch)) << " in " << r.message;
    }
  }
  EXPECT_NE(parse(with(0, std::string("1\t", 1) + "\xff")).message.find("'1\\xff'"),
            std::string::npos);
  EXPECT_NE(parse(with(14, std::string(100, 'z'))).message.find("...' (100 bytes)"),
            std::string::npos);
}

// Splits `bytes` with reads of `chunk` bytes.
struct Split {
  std::vector<std::string> texts;
  std::vector<CriteoLineSplitter::Line> lines;
};
Split split(const std::string& bytes, size_t chunk, int64_t max_line = kCriteoMaxLineBytes) {
  size_t at = 0;
  CriteoLineSplitter s(
      [&](char* buf, size_t cap) -> Result<size_t> {
        size_t n = std::min(cap, bytes.size() - at);
        std::copy(bytes.data() + at, bytes.data() + at + n, buf);
        at += n;
        return n;
      },
      chunk, max_line);
  Split out;
  CriteoLineSplitter::Line line;
  for (;;) {
    auto got = s.next(&line);
    EXPECT_TRUE(got.is_ok());
    if (!got.is_ok() || !*got) break;
    out.texts.emplace_back(line.text);
    out.lines.push_back(line);
  }
  EXPECT_EQ(s.lines(), static_cast<int64_t>(out.lines.size()));
  return out;
}

TEST(CriteoLineSplitter, EveryLineEndingAndEveryChunkSize) {
  struct Case {
    std::string bytes;
    std::vector<std::string> lines;
  };
  const std::vector<Case> cases = {
      {"", {}},
      {"a\nb\n", {"a", "b"}},
      {"a\r\nb\r\n", {"a", "b"}},
      {"a\nb", {"a", "b"}},      // no final newline: still a line
      {"a\r\nb\r", {"a", "b"}},  // CRLF file cut before its last '\n'
      {"a\r\nb\n", {"a", "b"}},  // mixed endings
      {"\n\n", {"", ""}},        // empty lines are lines (malformed: field_count)
      {"\r\n", {""}},
      {"a\r\r\n", {"a\r"}},  // only one '\r' is a line ending
      {"a\rb\n", {"a\rb"}},  // a lone '\r' is data (old Mac endings are one long line)
      {"\r", {""}},
      {std::string("a\0b\n", 4), {std::string("a\0b", 3)}},
  };
  for (const Case& c : cases) {
    for (size_t chunk : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{1} << 16}) {
      Split s = split(c.bytes, chunk);
      EXPECT_EQ(s.texts, c.lines) << "chunk " << chunk;
      for (size_t i = 0; i < s.lines.size(); ++i) {
        EXPECT_EQ(s.lines[i].number, static_cast<int64_t>(i + 1));
        EXPECT_EQ(s.lines[i].bytes, static_cast<int64_t>(c.lines[i].size()));
        EXPECT_FALSE(s.lines[i].overlong);
      }
    }
  }
}

TEST(CriteoLineSplitter, OverlongLinesAreCountedNotKept) {
  const int64_t max = 10;
  const std::string exact(max, 'x');
  const std::string over(max + 1, 'y');
  const std::string huge(100000, 'z');
  const std::string bytes = exact + "\r\n" + over + "\n" + huge + "\r\n" + "ok\n" + huge;
  for (size_t chunk : {size_t{1}, size_t{4}, size_t{11}, size_t{12}, size_t{4096}}) {
    Split s = split(bytes, chunk, max);
    ASSERT_EQ(s.lines.size(), 5u) << chunk;
    EXPECT_FALSE(s.lines[0].overlong);  // max bytes plus its '\r': fits
    EXPECT_EQ(s.texts[0], exact);
    EXPECT_TRUE(s.lines[1].overlong);
    EXPECT_EQ(s.lines[1].bytes, max + 1);
    EXPECT_TRUE(s.lines[2].overlong);
    EXPECT_EQ(s.lines[2].bytes, static_cast<int64_t>(huge.size()));  // without the '\r'
    EXPECT_TRUE(s.texts[2].empty());
    EXPECT_EQ(s.texts[3], "ok");
    EXPECT_EQ(s.lines[3].number, 4);
    EXPECT_TRUE(s.lines[4].overlong);
    EXPECT_EQ(s.lines[4].bytes, static_cast<int64_t>(huge.size()));
    CriteoRow row;
    CriteoLineResult r = parse_criteo_line(s.lines[2], &row);
    EXPECT_EQ(r.defect, CriteoDefect::kOverlong);
    EXPECT_NE(r.message.find("a line of 100000 bytes"), std::string::npos) << r.message;
  }
}

TEST(CriteoLineSplitter, ReadErrorsPassThrough) {
  int calls = 0;
  CriteoLineSplitter s(
      [&](char* buf, size_t) -> Result<size_t> {
        if (calls++ == 0) {
          buf[0] = 'a';
          return size_t{1};
        }
        return data_loss("disk gone");
      },
      16);
  CriteoLineSplitter::Line line;
  auto r = s.next(&line);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "disk gone");
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

TEST(MalformedTally, SkipCountsByDefectAndKeepsTheFirstMessages) {
  MalformedOptions o;
  o.max_count = 100;
  o.log = false;
  MalformedTally t("x.tsv", o);
  for (int i = 0; i < 15; ++i) {
    CriteoLineResult d{i % 2 ? CriteoDefect::kLabel : CriteoDefect::kNul,
                       "why " + std::to_string(i)};
    ASSERT_TRUE(t.record(100 + i, d).is_ok());
  }
  EXPECT_EQ(t.count(), 15);
  EXPECT_EQ(t.count(CriteoDefect::kLabel), 7);
  EXPECT_EQ(t.count(CriteoDefect::kNul), 8);
  EXPECT_EQ(t.count(CriteoDefect::kInteger), 0);
  ASSERT_EQ(static_cast<int>(t.messages().size()), MalformedTally::kKeptMessages);
  EXPECT_EQ(t.messages()[0], "x.tsv:100: why 0");
  EXPECT_EQ(t.breakdown(), "nul 8, label 7");
  t.reset();
  EXPECT_EQ(t.count(), 0);
  EXPECT_EQ(t.breakdown(), "none");
}

TEST(MalformedTally, FailRefusesTheFirstAndTheCountBoundTheOneBeyond) {
  MalformedOptions fail;
  fail.policy = MalformedPolicy::kFail;
  MalformedTally f("x.tsv", fail);
  Status s = f.record(12, {CriteoDefect::kLabel, "label must be 0 or 1, got '7'"});
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message().rfind("x.tsv:12: label must be 0 or 1, got '7'", 0), 0u) << s.message();
  EXPECT_NE(s.message().find("data.malformed is fail"), std::string::npos) << s.message();

  for (int64_t bound : {0, 1, 5}) {
    MalformedOptions skip;
    skip.max_count = bound;
    skip.log = false;
    MalformedTally t("y.tsv", skip);
    for (int64_t i = 1; i <= bound; ++i)
      EXPECT_TRUE(t.record(i * 10, {CriteoDefect::kInteger, "bad"}).is_ok());
    Status over = t.record(bound * 10 + 3, {CriteoDefect::kInteger, "bad"});
    EXPECT_EQ(over.code(), StatusCode::kDataLoss) << bound;
    EXPECT_NE(over.message().find("y.tsv:" + std::to_string(bound * 10 + 3) + ": bad"),
              std::string::npos);
    EXPECT_NE(over.message().find("more than data.max_malformed " + std::to_string(bound)),
              std::string::npos)
        << over.message();
  }
}

// A file with one line of each defect among good ones, CRLF and no final newline.
std::string mixed_file(std::vector<int64_t>* bad_lines) {
  std::vector<std::string> lines;
  for (int i = 0; i < 40; ++i) lines.push_back(format_criteo_line(make_row(i)));
  std::vector<std::string> f = fields_of(lines[0]);
  f[0] = "5";
  lines[3] = join(f);            // label
  lines[7] = "";                 // field_count
  lines[11] = lines[11] + "\t";  // field_count
  f = fields_of(lines[1]);
  f[2] = "1x";
  lines[15] = join(f);  // integer
  f = fields_of(lines[1]);
  f[30] = "xyz";
  lines[19] = join(f);  // category
  f = fields_of(lines[1]);
  f[6] = std::string("1\0", 2);
  lines[23] = join(f);                                     // nul
  lines[27] = std::string(kCriteoMaxLineBytes + 50, '1');  // overlong
  *bad_lines = {4, 8, 12, 16, 20, 24, 28};
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    out += lines[i];
    if (i + 1 < lines.size()) out += i % 2 ? "\r\n" : "\n";
  }
  return out;
}

TEST(ScanCriteo, CountsEverySplitAndEveryDefect) {
  const std::string path = temp_path("scan.tsv");
  std::vector<int64_t> bad;
  write_file(path, mixed_file(&bad));
  MalformedOptions o;
  o.log = false;
  for (size_t chunk : {size_t{5}, size_t{1} << 20}) {
    auto scan = scan_criteo(path, /*holdout_every=*/10, o, chunk);
    ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
    EXPECT_EQ(scan->lines, 40);
    EXPECT_EQ(scan->malformed, 7);
    // Test lines: 10, 20 (malformed), 30, 40 -> 3 valid; train: 36 lines, 6 malformed.
    EXPECT_EQ(scan->test_valid, 3);
    EXPECT_EQ(scan->train_valid, 30);
    for (CriteoDefect d : {CriteoDefect::kLabel, CriteoDefect::kInteger, CriteoDefect::kCategory,
                           CriteoDefect::kNul, CriteoDefect::kOverlong}) {
      EXPECT_EQ(scan->by_defect[static_cast<int>(d)], 1) << criteo_defect_name(d);
    }
    EXPECT_EQ(scan->by_defect[static_cast<int>(CriteoDefect::kFieldCount)], 2);
    ASSERT_EQ(scan->messages.size(), bad.size());
    for (size_t i = 0; i < bad.size(); ++i) {
      EXPECT_EQ(scan->messages[i].rfind(path + ":" + std::to_string(bad[i]) + ": ", 0), 0u)
          << scan->messages[i];
    }
  }
  // fail: the first malformed line, by number.
  o.policy = MalformedPolicy::kFail;
  auto failed = scan_criteo(path, 10, o);
  ASSERT_FALSE(failed.is_ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(failed.status().message().rfind(path + ":4: label must be 0 or 1, got '5'", 0), 0u)
      << failed.status().message();
  // skip with a count bound of 6: the 7th malformed line (line 28) fails it.
  o.policy = MalformedPolicy::kSkip;
  o.max_count = 6;
  auto counted = scan_criteo(path, 10, o);
  ASSERT_FALSE(counted.is_ok());
  EXPECT_EQ(counted.status().message().rfind(path + ":28: a line of ", 0), 0u)
      << counted.status().message();
  // skip with a fraction bound: 7 of 40 is 17.5 %.
  o.max_count = 1000;
  o.max_fraction = 0.17;
  auto share = scan_criteo(path, 10, o);
  ASSERT_FALSE(share.is_ok());
  EXPECT_NE(share.status().message().find(path + ": 7 of 40 lines are malformed (17.5 %"),
            std::string::npos)
      << share.status().message();
  EXPECT_NE(share.status().message().find("first: " + path + ":4: "), std::string::npos);
  o.max_fraction = 0.2;
  EXPECT_TRUE(scan_criteo(path, 10, o).is_ok());
  std::remove(path.c_str());
}

TEST(ScanCriteo, NoValidLineEmptyFileAndMissingFile) {
  const std::string path = temp_path("novalid.tsv");
  std::string garbage;
  for (int i = 0; i < 30; ++i) garbage += "not\ta\tcriteo\tline " + std::to_string(i) + "\n";
  write_file(path, garbage);
  MalformedOptions o;
  o.log = false;
  auto r = scan_criteo(path, 10, o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(
                path + ": no valid line in 30 lines (30 malformed: field_count 30; first: " + path +
                ":1: expected 40 tab-separated fields, got 4"),
            std::string::npos)
      << r.status().message();
  // An empty file is not malformed: it has no lines (the workload says there is nothing to train
  // on).
  write_file(path, "");
  auto empty = scan_criteo(path, 10, o);
  ASSERT_TRUE(empty.is_ok()) << empty.status().to_string();
  EXPECT_EQ(empty->lines, 0);
  EXPECT_EQ(empty->train_valid + empty->test_valid, 0);
  std::remove(path.c_str());
  EXPECT_EQ(scan_criteo(path, 10, o).status().code(), StatusCode::kNotFound);
  EXPECT_NE(scan_criteo(path, 10, o).status().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace tern
