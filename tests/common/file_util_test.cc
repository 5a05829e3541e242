// common/file_util.h and common/crc32.h: atomic replacement under failures (a failing fill, a
// crash in the middle of a write, a rename that cannot happen), private modes, directory fsync
// errors that name the path, whole-file reads; zlib's CRC-32 against its check value.
#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/crc32.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("tern_file_util_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Names in dir_ other than `keep` (temp files left behind).
  std::vector<std::string> others(const std::string& keep) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename() != keep) out.push_back(e.path().filename().string());
    }
    return out;
  }

  std::string dir_;
};

TEST_F(FileUtilTest, WritesAndReplaces) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(atomic_write_file(path, "old").is_ok());
  EXPECT_EQ(slurp(path), "old");
  ASSERT_TRUE(atomic_write_file(path, std::string("new\0bytes", 9)).is_ok());
  EXPECT_EQ(slurp(path), std::string("new\0bytes", 9));
  EXPECT_TRUE(others("f").empty());
}

TEST_F(FileUtilTest, WithoutSyncStillReplacesAtomically) {
  const std::string path = dir_ + "/f";
  AtomicWriteOptions o;
  o.sync = false;
  o.tmp_suffix = ".tmp";
  ASSERT_TRUE(atomic_write_file(path, "old", o).is_ok());
  ASSERT_TRUE(atomic_write_file(path, "newer", o).is_ok());
  EXPECT_EQ(slurp(path), "newer");
  EXPECT_TRUE(others("f").empty());
}

TEST_F(FileUtilTest, FailingFillLeavesTheOldFileAndNoTemp) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(atomic_write_file(path, "old").is_ok());
  for (const std::string& suffix : {std::string(), std::string(".tmp")}) {
    AtomicWriteOptions o;
    o.tmp_suffix = suffix;
    Status s = atomic_write_file(
        path,
        [](FileWriter& w) {
          EXPECT_TRUE(w.write("half of the new cont", 20).is_ok());
          return internal_error("the encoder gave up");
        },
        o);
    EXPECT_EQ(s.message(), "the encoder gave up");
    EXPECT_EQ(slurp(path), "old");
    EXPECT_TRUE(others("f").empty()) << "suffix '" << suffix << "'";
  }
}

TEST_F(FileUtilTest, CrashInTheMiddleLeavesTheOldOrTheNewFile) {
  // A child writes the new contents in pieces and dies (SIGKILL, no cleanup) after `pieces` of
  // them, or completes: `path` holds exactly the old or exactly the new bytes.
  const std::string path = dir_ + "/f";
  const std::string old_bytes(5000, 'o');
  const std::string new_bytes(5000, 'n');
  for (int pieces = 0; pieces <= 5; ++pieces) {
    ASSERT_TRUE(atomic_write_file(path, old_bytes).is_ok());
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Status s = atomic_write_file(path, [&](FileWriter& w) {
        for (int i = 0; i < 5; ++i) {
          if (i == pieces) ::kill(::getpid(), SIGKILL);
          if (!w.write(new_bytes.data() + i * 1000, 1000).is_ok()) ::_exit(3);
        }
        return Status::ok();
      });
      ::_exit(s.is_ok() ? 0 : 2);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (pieces < 5) {
      ASSERT_TRUE(WIFSIGNALED(status)) << pieces;
      EXPECT_EQ(slurp(path), old_bytes) << "killed after " << pieces << " pieces";
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      EXPECT_EQ(slurp(path), new_bytes);
    }
    for (const std::string& name : others("f")) fs::remove(dir_ + "/" + name);  // the stray temp
  }
}

TEST_F(FileUtilTest, RenameFailureLeavesTheTargetAndNamesThePaths) {
  // A non-empty directory where the file should go: rename(2) refuses to replace it.
  const std::string path = dir_ + "/d";
  fs::create_directories(path + "/inside");
  Status s = atomic_write_file(path, "new");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("rename to " + path), std::string::npos) << s.message();
  EXPECT_TRUE(fs::is_directory(path + "/inside"));
  EXPECT_TRUE(others("d").empty());
}

TEST_F(FileUtilTest, MissingDirectoryNamesThePath) {
  const std::string path = dir_ + "/no/such/dir/f";
  Status s = atomic_write_file(path, "x");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find(dir_ + "/no/such/dir/f"), std::string::npos) << s.message();
}

TEST_F(FileUtilTest, PrivateModeIsKeptEvenOverAStaleTemp) {
  const std::string path = dir_ + "/secret";
  {
    std::ofstream stale(path + ".tmp");  // a crash left it, mode 0644
    stale << "stale";
  }
  fs::permissions(path + ".tmp", fs::perms(0644));
  AtomicWriteOptions o;
  o.mode = 0600;
  o.tmp_suffix = ".tmp";
  ASSERT_TRUE(atomic_write_file(path, "42\n", o).is_ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(slurp(path), "42\n");
}

TEST_F(FileUtilTest, FsyncDirErrorsNameThePath) {
  EXPECT_TRUE(fsync_dir(dir_).is_ok());
  for (const std::string& bad : {dir_ + "/missing", dir_ + "/file"}) {
    if (bad == dir_ + "/file") {
      ASSERT_TRUE(atomic_write_file(bad, "x").is_ok());
    }
    Status s = fsync_dir(bad);
    ASSERT_FALSE(s.is_ok()) << bad;
    EXPECT_EQ(s.message().rfind(bad + ": ", 0), 0u) << s.message();
  }
}

TEST_F(FileUtilTest, ParentDir) {
  EXPECT_EQ(parent_dir("/a/b/c"), "/a/b");
  EXPECT_EQ(parent_dir("c"), ".");
  EXPECT_EQ(parent_dir("/c"), "/");
}

TEST_F(FileUtilTest, ReadWholeFile) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(atomic_write_file(path, "hello").is_ok());
  EXPECT_EQ(*read_whole_file(path), "hello");
  EXPECT_EQ(read_whole_file(path, 4).status().code(), StatusCode::kResourceExhausted);
  auto missing = read_whole_file(dir_ + "/missing");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ + "/missing"), std::string::npos);
}

TEST(Crc32Test, StandardCheckValueAndChaining) {
  EXPECT_EQ(crc32(0, "123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32(0, nullptr, 0), 0u);
  EXPECT_EQ(crc32(0, "", 0), 0u);
  // Any split gives the same value as one pass.
  const std::string s = "The quick brown fox jumps over the lazy dog";
  const uint32_t whole = crc32(0, s.data(), s.size());
  EXPECT_EQ(whole, 0x414FA339u);
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    EXPECT_EQ(crc32(crc32(0, s.data(), cut), s.data() + cut, s.size() - cut), whole) << cut;
  }
}

}  // namespace
}  // namespace tern
