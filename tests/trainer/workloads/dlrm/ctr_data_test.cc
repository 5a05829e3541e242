#include "trainer/workloads/dlrm/ctr_data.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "trainer/workloads/dlrm/dlrm_model.h"

namespace tern {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/ctr_" + std::to_string(::getpid()) + "_" + name;
}

// One Criteo line: label, 13 ints, 26 hex categories; "" leaves a field empty.
std::string criteo_line(int label, int seed, bool sparse_missing = false) {
  std::string s = std::to_string(label);
  for (int i = 0; i < 13; ++i)
    s += "\t" + (i == 3 ? std::string() : std::to_string((seed * 7 + i) % 50 - 1));
  for (int t = 0; t < 26; ++t) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(seed * 2654435761u + t));
    s += "\t" + ((sparse_missing && t == 5) ? std::string() : std::string(hex));
  }
  return s;
}

std::vector<int64_t> sizes26(int64_t n = 100) { return std::vector<int64_t>(26, n); }

Result<std::vector<Batch>> read_all(CriteoOptions o, int64_t batch) {
  TERN_ASSIGN_OR_RETURN(auto r, CriteoReader::open(o));
  std::vector<Batch> out;
  while (true) {
    TERN_ASSIGN_OR_RETURN(Batch b, r->next(batch));
    if (b.size() == 0) break;
    out.push_back(b);
  }
  return out;
}

Batch concat(const std::vector<Batch>& bs) {
  std::vector<at::Tensor> x, s, y;
  for (auto& b : bs) {
    x.push_back(b.x);
    s.push_back(b.sparse);
    y.push_back(b.y);
  }
  return Batch{at::cat(x), at::cat(s), at::cat(y)};
}

TEST(CriteoReader, ParsesTransformsAndHashesEveryField) {
  std::string path = temp_path("parse.tsv");
  {
    std::ofstream f(path);
    f << criteo_line(1, 1) << "\n"
      << criteo_line(0, 2, /*sparse_missing=*/true) << "\r\n"
      << criteo_line(1, 3);
  }
  CriteoOptions o;
  o.path = path;
  o.table_sizes = sizes26(97);
  o.chunk_bytes = 7;  // lines straddle many chunks
  auto r = read_all(o, 2);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  Batch b = concat(*r);
  ASSERT_EQ(b.size(), 3);
  EXPECT_EQ(b.y[0].item<float>(), 1.0f);
  EXPECT_EQ(b.y[1].item<float>(), 0.0f);
  for (int i = 0; i < 13; ++i) {
    long long raw = (1 * 7 + i) % 50 - 1;
    float want =
        i == 3 ? 0.0f : static_cast<float>(std::log1p(static_cast<double>(std::max(raw, 0LL))));
    EXPECT_FLOAT_EQ(b.x[0][i].item<float>(), want) << "I" << i + 1;
  }
  for (int t = 0; t < 26; ++t) {
    uint64_t v = static_cast<uint32_t>(1 * 2654435761u + t);
    EXPECT_EQ(b.sparse[0][t].item<int64_t>(), hash_category(v, t, 97)) << "C" << t + 1;
  }
  // A missing category hashes to a fixed row, the same on every line.
  int64_t missing = b.sparse[1][5].item<int64_t>();
  EXPECT_GE(missing, 0);
  EXPECT_LT(missing, 97);
  EXPECT_LT(b.sparse.max().item<int64_t>(), 97);
  EXPECT_GE(b.sparse.min().item<int64_t>(), 0);
  std::remove(path.c_str());
}

TEST(CriteoReader, SkipsBadLinesAndNamesFileAndLine) {
  std::string path = temp_path("bad.tsv");
  {
    std::ofstream f(path);
    f << criteo_line(1, 1) << "\n";
    f << "1\t2\t3\n";  // line 2: too few fields
    f << criteo_line(0, 2) << "\n";
    std::string bad = criteo_line(1, 4);
    bad.replace(bad.find('\t') + 1, 0, "x");  // line 4: I1 not an integer
    f << bad << "\n";
    f << "7" << criteo_line(1, 5).substr(1) << "\n";  // line 5: label 7
    f << criteo_line(1, 6) << "\n";
  }
  CriteoOptions o;
  o.path = path;
  o.table_sizes = sizes26();
  auto reader = CriteoReader::open(o);
  ASSERT_TRUE(reader.is_ok());
  auto b = (*reader)->next(100);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->size(), 3);
  EXPECT_EQ((*reader)->bad_lines(), 3);
  const auto& msgs = (*reader)->bad_line_messages();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0], path + ":2: expected 40 tab-separated fields, got 3");
  EXPECT_NE(msgs[1].find(path + ":4: integer feature I1 is not an integer"), std::string::npos)
      << msgs[1];
  EXPECT_NE(msgs[2].find(path + ":5: label must be 0 or 1"), std::string::npos) << msgs[2];

  EXPECT_EQ((*reader)->bad_lines(CriteoDefect::kFieldCount), 1);
  EXPECT_EQ((*reader)->bad_lines(CriteoDefect::kInteger), 1);
  EXPECT_EQ((*reader)->bad_lines(CriteoDefect::kLabel), 1);

  // Too many bad lines: refused, naming the line.
  o.malformed.max_count = 1;
  auto strict = read_all(o, 100);
  ASSERT_FALSE(strict.is_ok());
  EXPECT_EQ(strict.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(strict.status().message().find(path + ":4:"), std::string::npos)
      << strict.status().message();
  EXPECT_NE(strict.status().message().find("more than data.max_malformed 1 malformed lines"),
            std::string::npos)
      << strict.status().message();

  // fail: the first malformed line of the reader's share, by number. With 2 ranks, line 2 is
  // rank 1's (the 2nd line), so rank 0 meets line 5 first (lines 1, 3, 5).
  o.malformed.policy = MalformedPolicy::kFail;
  auto first = read_all(o, 100);
  ASSERT_FALSE(first.is_ok());
  EXPECT_EQ(first.status().message().rfind(path + ":2: expected 40", 0), 0u)
      << first.status().message();
  o.world = 2;
  auto rank0 = read_all(o, 100);
  ASSERT_FALSE(rank0.is_ok());
  EXPECT_EQ(rank0.status().message().rfind(path + ":5: label must be 0 or 1", 0), 0u)
      << rank0.status().message();
  o.rank = 1;
  auto rank1 = read_all(o, 100);
  ASSERT_FALSE(rank1.is_ok());
  EXPECT_EQ(rank1.status().message().rfind(path + ":2: ", 0), 0u) << rank1.status().message();
  std::remove(path.c_str());
}

// CRLF endings everywhere, a last line without '\n' (with and without its '\r'), empty fields
// and negative integers: every line well-formed, the values as documented.
TEST(CriteoReader, CrlfMissingFinalNewlineEmptyFieldsAndNegativeIntegers) {
  std::string line = criteo_line(1, 9, /*sparse_missing=*/true);
  // I2 = -3 (Criteo's I2 goes down to -3), I7 empty.
  std::vector<std::string> f;
  for (size_t b = 0;;) {
    size_t e = line.find('\t', b);
    f.push_back(line.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  f[2] = "-3";
  f[7] = "";
  line.clear();
  for (size_t i = 0; i < f.size(); ++i) line += (i ? "\t" : "") + f[i];
  for (const std::string tail : {"\r\n", "\r", ""}) {
    std::string path = temp_path("crlf.tsv");
    std::ofstream(path, std::ios::binary) << line << "\r\n" << line << "\r\n" << line << tail;
    CriteoOptions o;
    o.path = path;
    o.table_sizes = sizes26(97);
    o.chunk_bytes = 5;
    auto r = read_all(o, 2);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    Batch b = concat(*r);
    ASSERT_EQ(b.size(), 3) << "tail '" << tail << "'";
    for (int64_t row = 0; row < 3; ++row) {
      EXPECT_EQ(b.x[row][1].item<float>(), 0.0f) << "log(1 + max(-3, 0))";
      EXPECT_EQ(b.x[row][6].item<float>(), 0.0f) << "empty I7";
      EXPECT_FLOAT_EQ(b.x[row][0].item<float>(), static_cast<float>(std::log1p(std::stod(f[1]))));
      EXPECT_EQ(b.sparse[row][5].item<int64_t>(), hash_category(kCriteoMissingCategory, 5, 97))
          << "empty C6";
      EXPECT_EQ(b.sparse[row][25].item<int64_t>(), b.sparse[0][25].item<int64_t>())
          << "the last field kept no '\\r'";
    }
    std::remove(path.c_str());
  }
}

// A share whose lines are all malformed is not an error for the reader (a rank's share of a
// small file may be): it returns no rows and counts them. The file-wide rule (no valid line at
// all is a data error) is scan_criteo's (criteo_format_test.cc).
TEST(CriteoReader, AShareOfOnlyMalformedLinesReadsEmpty) {
  std::string path = temp_path("novalid.tsv");
  {
    std::ofstream f(path);
    for (int i = 0; i < 30; ++i) f << "not\ta\tcriteo\tline " << i << "\n";
  }
  CriteoOptions o;
  o.path = path;
  o.table_sizes = sizes26();
  o.malformed.log = false;
  auto reader = CriteoReader::open(o);
  ASSERT_TRUE(reader.is_ok());
  auto b = (*reader)->next(8);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->size(), 0);
  EXPECT_EQ((*reader)->bad_lines(), 30);
  EXPECT_EQ((*reader)->bad_lines(CriteoDefect::kFieldCount), 30);
  // Too many bad lines is a data error (not a bad spec).
  o.malformed.max_count = 5;
  auto strict = read_all(o, 8);
  EXPECT_EQ(strict.status().code(), StatusCode::kDataLoss) << strict.status().to_string();
  EXPECT_NE(strict.status().message().find(path + ":6: "), std::string::npos)
      << strict.status().message();
  std::remove(path.c_str());
}

// Issue 18 item 9: a huge malformed field is quoted by its first bytes and its length, never
// whole, in the kept messages (which also go to the log); a line longer than any well-formed
// line is never buffered whole (criteo_format.h) and is reported by its length.
TEST(CriteoReader, HugeMalformedFieldIsCutInMessages) {
  std::string path = temp_path("huge.tsv");
  {
    std::ofstream f(path);
    f << criteo_line(1, 1) << "\n";
    std::string bad = criteo_line(1, 2);
    bad.replace(bad.find('\t') + 1, 0, std::string(2 << 20, 'x'));  // I1: 2 MiB of 'x'
    f << bad << "\n";
    std::string wide = criteo_line(1, 4);
    wide.replace(wide.find('\t') + 1, 0, std::string(200, 'x'));  // I1: 200 bytes of 'x'
    f << wide << "\n";
    f << criteo_line(0, 3) << "\n";
  }
  CriteoOptions o;
  o.path = path;
  o.table_sizes = sizes26();
  o.chunk_bytes = 4096;
  auto reader = CriteoReader::open(o);
  ASSERT_TRUE(reader.is_ok());
  auto b = (*reader)->next(100);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->size(), 2);
  ASSERT_EQ((*reader)->bad_line_messages().size(), 2u);
  const std::string& m = (*reader)->bad_line_messages()[0];
  EXPECT_LT(m.size(), 400u) << m.substr(0, 400);
  EXPECT_NE(m.find(path + ":2: a line of " + std::to_string((2 << 20) + criteo_line(1, 2).size()) +
                   " bytes"),
            std::string::npos)
      << m;
  const std::string& w = (*reader)->bad_line_messages()[1];
  EXPECT_LT(w.size(), 400u) << w;
  EXPECT_NE(w.find(path + ":3: integer feature I1 is not an integer: 'xxx"), std::string::npos)
      << w;
  EXPECT_NE(w.find("bytes)"), std::string::npos) << w;
  EXPECT_EQ((*reader)->bad_lines(CriteoDefect::kOverlong), 1);
  EXPECT_EQ((*reader)->bad_lines(CriteoDefect::kInteger), 1);
  std::remove(path.c_str());
}

TEST(CriteoReader, RanksReadDisjointInterleavedSharesAndHoldOut) {
  std::string path = temp_path("shares.tsv.gz");
  {
    gzFile f = gzopen(path.c_str(), "wb");
    for (int i = 0; i < 23; ++i) {
      std::string l = criteo_line(i % 2, i) + "\n";
      gzwrite(f, l.data(), static_cast<unsigned>(l.size()));
    }
    gzclose(f);
  }
  CriteoOptions o;
  o.path = path;
  o.table_sizes = sizes26(1000);
  o.holdout_every = 5;  // lines 5, 10, 15, 20 are test
  auto all = read_all(o, 4);
  ASSERT_TRUE(all.is_ok()) << all.status().to_string();
  EXPECT_EQ(concat(*all).size(), 23);

  o.split = CtrSplit::kTest;
  auto test = read_all(o, 4);
  ASSERT_TRUE(test.is_ok());
  EXPECT_EQ(concat(*test).size(), 4);

  o.split = CtrSplit::kTrain;
  std::set<int64_t> seen;
  int64_t total = 0;
  for (int rank = 0; rank < 3; ++rank) {
    o.rank = rank;
    o.world = 3;
    auto share = read_all(o, 2);
    ASSERT_TRUE(share.is_ok());
    Batch b = concat(*share);
    EXPECT_EQ(b.size(), rank < 1 ? 7 : 6) << "19 train lines over 3 ranks";
    for (int64_t i = 0; i < b.size(); ++i)
      seen.insert(b.sparse[i][0].item<int64_t>() * 1000 + b.sparse[i][1].item<int64_t>());
    total += b.size();
  }
  EXPECT_EQ(total, 19);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), 19);  // disjoint

  // rewind and skip_to reproduce the stream.
  o.rank = 1;
  auto r = CriteoReader::open(o);
  ASSERT_TRUE(r.is_ok());
  Batch first = (*r)->next(6).value();
  ASSERT_TRUE((*r)->skip_to(2).is_ok());
  EXPECT_EQ((*r)->position(), 2);
  Batch rest = (*r)->next(6).value();
  EXPECT_TRUE(at::equal(rest.sparse, first.sparse.narrow(0, 2, 4)));
  std::remove(path.c_str());
}

TEST(CriteoReader, MissingFileAndBadOptions) {
  CriteoOptions o;
  o.path = "/nonexistent/train.txt";
  o.table_sizes = sizes26();
  auto r = CriteoReader::open(o);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/train.txt"), std::string::npos);
  o.table_sizes = {10, 10};
  EXPECT_EQ(CriteoReader::open(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(Zipf, MatchesTheDistribution) {
  const int64_t n = 50;
  const double alpha = 1.1;
  ZipfSampler z(n, alpha);
  std::vector<double> counts(n, 0);
  uint64_t state = 42;
  const int draws = 200000;
  for (int i = 0; i < draws;) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    int64_t k;
    if (z.sample(static_cast<double>(state >> 11) * 0x1.0p-53, &k)) {
      ASSERT_GE(k, 1);
      ASSERT_LE(k, n);
      counts[k - 1] += 1;
      ++i;
    }
  }
  double norm = 0;
  for (int64_t k = 1; k <= n; ++k) norm += std::pow(k, -alpha);
  for (int64_t k : {1, 2, 5, 20, 50}) {
    double p = std::pow(k, -alpha) / norm;
    double sd = std::sqrt(draws * p * (1 - p));
    EXPECT_NEAR(counts[k - 1], draws * p, 5 * sd) << "rank " << k;
  }
}

TEST(SyntheticCtr, DeterministicFromTheSeed) {
  SyntheticCtrOptions o;
  o.train_size = 1000;
  SyntheticCtr a(o), b(o);
  Batch x = a.train_batch({0, 5, 999});
  Batch y = b.train_batch({0, 5, 999});
  EXPECT_TRUE(at::equal(x.x, y.x));
  EXPECT_TRUE(at::equal(x.sparse, y.sparse));
  EXPECT_TRUE(at::equal(x.y, y.y));
  // Sample i does not depend on what else is in the batch.
  EXPECT_TRUE(at::equal(a.train_batch({5}).sparse[0], x.sparse[1]));
  // Train and test differ; another seed differs.
  EXPECT_FALSE(at::equal(a.test_batch(0, 1).x, x.x.narrow(0, 0, 1)));
  o.seed = 99;
  SyntheticCtr c(o);
  EXPECT_FALSE(at::equal(c.train_batch({0, 5, 999}).x, x.x));
  EXPECT_EQ(x.x.sizes(), (std::vector<int64_t>{3, 13}));
  EXPECT_EQ(x.sparse.sizes(), (std::vector<int64_t>{3, 26}));
}

TEST(SyntheticCtr, ZipfCategoriesAndAPlantedSignal) {
  SyntheticCtrOptions o;
  o.test_size = 8000;
  SyntheticCtr data(o);
  Batch b = data.test_batch(0, o.test_size);
  // Zipf: row 0 is the hottest, then row 1, and rows beyond 100 are rare.
  at::Tensor col = b.sparse.select(1, 7);
  double r0 = (col == 0).sum().item<double>(), r1 = (col == 1).sum().item<double>();
  double tail = (col >= 100).sum().item<double>();
  EXPECT_GT(r0, r1);
  EXPECT_NEAR(r1 / r0, std::pow(2.0, -1.1), 0.08);
  EXPECT_LT(tail, 0.5 * o.test_size);
  EXPECT_LT(b.sparse.max().item<int64_t>(), 1000);
  // Labels carry the planted logistic model: its logit ranks them (AUC well above 0.5), a
  // score that ignores the features does not.
  std::vector<double> logits;
  for (int64_t i = 0; i < o.test_size; ++i)
    logits.push_back(data.planted_logit(CtrSplit::kTest, i));
  double planted = exact_auc(at::tensor(logits, at::kDouble), b.y);
  EXPECT_GT(planted, 0.8);
  auto gen = at::detail::createCPUGenerator(5);
  double random = exact_auc(at::rand({o.test_size}, gen, at::kDouble), b.y);
  EXPECT_NEAR(random, 0.5, 0.03);
  double click_rate = b.y.mean().item<double>();
  EXPECT_GT(click_rate, 0.2);
  EXPECT_LT(click_rate, 0.6);
}

TEST(SyntheticCtr, StreamsAreDisjointShares) {
  SyntheticCtrOptions o;
  o.train_size = 10;
  auto data = std::make_shared<const SyntheticCtr>(o);
  int64_t total = 0;
  for (int rank = 0; rank < 3; ++rank) {
    SyntheticCtrStream s(data, CtrSplit::kTrain, rank, 3);
    Batch b = s.next(100).value();
    EXPECT_EQ(b.size(), rank == 0 ? 4 : 3);
    // Sample rank + k * world.
    EXPECT_TRUE(at::equal(b.x[1], data->batch(CtrSplit::kTrain, {rank + 3}).x[0]));
    EXPECT_EQ(s.next(100).value().size(), 0);
    total += b.size();
  }
  EXPECT_EQ(total, 10);
}

TEST(ExactAuc, KnownValuesWithTies) {
  auto auc = [](std::vector<double> s, std::vector<double> l) {
    return exact_auc(at::tensor(s, at::kDouble), at::tensor(l, at::kDouble));
  };
  EXPECT_DOUBLE_EQ(auc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(auc({0.9, 0.8, 0.2, 0.1}, {0, 0, 1, 1}), 0.0);
  EXPECT_DOUBLE_EQ(auc({0.5, 0.5, 0.5, 0.5}, {0, 1, 0, 1}), 0.5);
  // pos {0.4, 0.6}, neg {0.4, 0.2}: pairs (0.4>0.2)=1, (0.4=0.4)=.5, (0.6>both)=2 -> 3.5/4.
  EXPECT_DOUBLE_EQ(auc({0.4, 0.6, 0.4, 0.2}, {1, 1, 0, 0}), 0.875);
  EXPECT_DOUBLE_EQ(auc({0.3, 0.7}, {1, 1}), 0.5);  // one class: undefined, reported as 0.5
}

}  // namespace
}  // namespace tern
