// Driver for the fuzz targets when not built with libFuzzer (g++, CI).
//
//   <target>_fuzz_corpus_test DIR...                 corpus replay (the default)
//   <target>_fuzz_corpus_test --seconds=N DIR...     then N seconds of random mutations
//
// Corpus replay feeds every file of the given directories, plus deterministic mutations of
// each (truncations, byte flips, duplicated spans), through LLVMFuzzerTestOneInput. The timed
// mode (also TERN_FUZZ_SECONDS=N in the environment) then keeps mutating inputs drawn from
// the corpus and from earlier mutants (no coverage feedback: a fixed-seed random walk, seed
// --seed=S or TERN_FUZZ_SEED, default 42) until the time is up, so CI can fuzz every target
// for a bounded time. A crash or abort fails the test; the last input is written to
// fuzz-crash-<target>.bin first when TERN_FUZZ_CRASH_DIR is set.
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

const std::string* g_current = nullptr;  // the input being run, for the crash handler
std::string g_crash_path;

void on_crash(int sig) {
  if (g_current != nullptr && !g_crash_path.empty()) {
    if (FILE* f = std::fopen(g_crash_path.c_str(), "wb")) {
      std::fwrite(g_current->data(), 1, g_current->size(), f);
      std::fclose(f);
    }
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void feed(const std::string& s) {
  g_current = &s;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  g_current = nullptr;
}

// One random edit of `s` (never longer than max_len).
void mutate(std::string* s, std::mt19937_64& rng, size_t max_len) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  switch (rng() % 8) {
    case 0:  // flip a bit
      if (!s->empty()) (*s)[pick(s->size())] ^= static_cast<char>(1u << (rng() % 8));
      break;
    case 1:  // set a byte
      if (!s->empty()) (*s)[pick(s->size())] = static_cast<char>(rng() & 0xff);
      break;
    case 2:  // truncate
      s->resize(pick(s->size() + 1));
      break;
    case 3:  // erase a span
      if (!s->empty()) s->erase(pick(s->size()), 1 + pick(16));
      break;
    case 4: {  // insert random bytes
      std::string ins(1 + pick(8), '\0');
      for (char& c : ins) c = static_cast<char>(rng() & 0xff);
      s->insert(pick(s->size() + 1), ins);
      break;
    }
    case 5:  // duplicate a span
      if (!s->empty()) s->insert(pick(s->size() + 1), s->substr(pick(s->size()), 1 + pick(32)));
      break;
    case 6: {  // an interesting integer, little endian
      static const uint32_t values[] = {0,           1,           0x7f,      0x80,
                                        0xff,        0x100,       0xffff,    0x7fffffff,
                                        0x80000000u, 0xffffffffu, 64u << 20, (64u << 20) + 1};
      uint32_t v = values[pick(sizeof(values) / sizeof(values[0]))];
      size_t at = pick(s->size() + 1);
      for (int i = 0; i < 4; ++i) {
        char c = static_cast<char>((v >> (8 * i)) & 0xff);
        if (at + i < s->size())
          (*s)[at + i] = c;
        else
          s->push_back(c);
      }
      break;
    }
    case 7:  // swap two spans of the same length
      if (s->size() >= 2) {
        size_t n = 1 + pick(std::min<size_t>(32, s->size() / 2));
        size_t a = pick(s->size() - n + 1), b = pick(s->size() - n + 1);
        std::string ta = s->substr(a, n), tb = s->substr(b, n);
        s->replace(b, n, ta);
        s->replace(a, n, tb);
      }
      break;
  }
  if (s->size() > max_len) s->resize(max_len);
}

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = static_cast<double>(env_long("TERN_FUZZ_SECONDS", 0));
  uint64_t seed = static_cast<uint64_t>(env_long("TERN_FUZZ_SEED", 42));
  std::vector<std::string> dirs;
  for (int a = 1; a < argc; ++a) {
    std::string arg = argv[a];
    if (arg.rfind("--seconds=", 0) == 0) {
      seconds = std::strtod(arg.c_str() + 10, nullptr);
    } else if (arg.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(arg.c_str() + 7, nullptr, 10);
    } else {
      dirs.push_back(arg);
    }
  }
  const std::string target = std::filesystem::path(argv[0]).filename().string();
  if (const char* dir = std::getenv("TERN_FUZZ_CRASH_DIR")) {
    g_crash_path = std::string(dir) + "/fuzz-crash-" + target + ".bin";
    std::signal(SIGABRT, on_crash);
    std::signal(SIGSEGV, on_crash);
  }

  std::mt19937_64 rng(42);
  std::vector<std::string> corpus;
  int files = 0;
  long inputs = 0;
  for (const auto& d : dirs) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(d)) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::string s((std::istreambuf_iterator<char>(in)), {});
      ++files;
      corpus.push_back(s);
      feed(s);
      ++inputs;
      for (int m = 0; m < 300 && !s.empty(); ++m) {
        std::string t = s;
        size_t pos = rng() % t.size();
        switch (m % 4) {
          case 0:
            t.resize(pos);
            break;
          case 1:
            t[pos] = static_cast<char>(rng() & 0xff);
            break;
          case 2:
            t.insert(pos, t.substr(rng() % t.size(), 1 + rng() % 16));
            break;
          case 3:
            t.erase(pos, 1 + rng() % 8);
            break;
        }
        feed(t);
        ++inputs;
      }
    }
  }
  std::printf("fuzz corpus regression: %d files, %ld inputs, no crash\n", files, inputs);
  if (files == 0) return 1;
  if (seconds <= 0) return 0;

  // Timed random mutation: a bounded pool of inputs that grows from the corpus.
  rng.seed(seed);
  size_t max_len = 4096;
  for (const auto& s : corpus) max_len = std::max(max_len, s.size());
  std::vector<std::string> pool = corpus;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long timed = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int burst = 0; burst < 64; ++burst) {
      std::string t = pool[rng() % pool.size()];
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) mutate(&t, rng, max_len);
      feed(t);
      ++timed;
      if (rng() % 16 == 0) {
        if (pool.size() < 4096)
          pool.push_back(t);
        else
          pool[rng() % pool.size()] = t;
      }
    }
  }
  std::printf("fuzz random mutation: %ld inputs in %.0f s (seed %llu), no crash\n", timed, seconds,
              static_cast<unsigned long long>(seed));
  return 0;
}
