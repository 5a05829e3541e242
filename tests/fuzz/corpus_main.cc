// Regression driver for the fuzz targets when not built with libFuzzer (g++, CI): feeds every
// file of the given corpus directories, plus deterministic mutations of each (truncations,
// byte flips, duplicated spans), through LLVMFuzzerTestOneInput. A crash fails the test.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static void feed(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

int main(int argc, char** argv) {
  std::mt19937_64 rng(42);
  int files = 0, inputs = 0;
  for (int a = 1; a < argc; ++a) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[a])) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::string s((std::istreambuf_iterator<char>(in)), {});
      ++files;
      feed(s);
      ++inputs;
      for (int m = 0; m < 300 && !s.empty(); ++m) {
        std::string t = s;
        size_t pos = rng() % t.size();
        switch (m % 4) {
          case 0: t.resize(pos); break;
          case 1: t[pos] = static_cast<char>(rng() & 0xff); break;
          case 2: t.insert(pos, t.substr(rng() % t.size(), 1 + rng() % 16)); break;
          case 3: t.erase(pos, 1 + rng() % 8); break;
        }
        feed(t);
        ++inputs;
      }
    }
  }
  std::printf("fuzz corpus regression: %d files, %d inputs, no crash\n", files, inputs);
  return files > 0 ? 0 : 1;
}
