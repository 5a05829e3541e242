// Regression driver for coordinator_rpc_fuzz.cc when not built with libFuzzer (g++, CI):
// replays the corpus (and the built-in seed programs), and from each runs chains of
// structured mutations through LLVMFuzzerCustomMutator, deterministically seeded. A crash or
// a violated invariant aborts the test.
//   coordinator_rpc_structured_test DIR...      replay + mutate
//   coordinator_rpc_structured_test --write-seeds DIR   write the seed programs as files
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed);
std::vector<std::string> coordinator_rpc_seed_programs();

namespace {

constexpr size_t kMaxLen = 16384;

void feed(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") {
    std::filesystem::create_directories(argv[2]);
    int n = 0;
    for (const std::string& p : coordinator_rpc_seed_programs()) {
      std::ofstream(std::string(argv[2]) + "/seed-" + std::to_string(n++), std::ios::binary) << p;
    }
    std::printf("wrote %d seed programs to %s\n", n, argv[2]);
    return 0;
  }
  // 300 chains per input (about 14k programs, ~10 s here): with item 1 of issue 18 fixed the
  // alias crash it used to hit at 100 is gone, so CI searches deeper.
  const int chains =
      std::getenv("TERN_FUZZ_CHAINS") ? std::atoi(std::getenv("TERN_FUZZ_CHAINS")) : 300;
  std::vector<std::string> inputs = coordinator_rpc_seed_programs();
  int files = 0;
  for (int a = 1; a < argc; ++a) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[a])) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      inputs.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      ++files;
    }
  }
  unsigned seed = 1;
  int runs = 0;
  for (const std::string& input : inputs) {
    feed(input);
    ++runs;
    for (int chain = 0; chain < chains; ++chain) {
      std::vector<uint8_t> buf(kMaxLen);
      size_t size = std::min(input.size(), kMaxLen);
      std::copy(input.begin(), input.begin() + static_cast<long>(size), buf.begin());
      for (int step = 0; step < 8; ++step) {
        size = LLVMFuzzerCustomMutator(buf.data(), size, kMaxLen, seed++);
        LLVMFuzzerTestOneInput(buf.data(), size);
        ++runs;
      }
    }
  }
  std::printf(
      "coordinator rpc fuzz regression: %d corpus files, %d programs run, no crash and "
      "no invariant violated\n",
      files, runs);
  return files > 0 ? 0 : 1;
}
