// common/path_policy: a job spec's paths stay inside its job directory and the data
// directories: ".." escapes, absolute paths elsewhere and symlinks that lead out are refused
// with the field named; paths inside are accepted.
#include "common/path_policy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tern {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(PathIsUnder, ComparesWholeComponents) {
  EXPECT_TRUE(path_is_under("/data", "/data"));
  EXPECT_TRUE(path_is_under("/data/x/y", "/data"));
  EXPECT_TRUE(path_is_under("/data/x/", "/data/"));
  EXPECT_FALSE(path_is_under("/data2/x", "/data")) << "a sibling sharing a prefix";
  EXPECT_FALSE(path_is_under("/", "/data"));
  EXPECT_FALSE(path_is_under("/data/../etc", "/data"));
  EXPECT_TRUE(path_is_under("/data/a/../b", "/data"));
}

class PathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_paths_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    for (const char* d : {"work/j-1", "data/mnist", "secret"}) fs::create_directories(dir_ / d);
    std::ofstream(dir_ / "secret" / "key.pem") << "secret";
    std::ofstream(dir_ / "data" / "mnist" / "train.gz") << "data";
    policy_.job_dir = (dir_ / "work" / "j-1").string();
    policy_.write_roots = {(dir_ / "work").string()};
    policy_.read_roots = {(dir_ / "data").string()};
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A spec reading `data_path` (a file-backed source) and writing checkpoints to `recovery_dir`.
  static JobSpec spec(const std::string& data_path, const std::string& recovery_dir = "",
                      const std::string& resume_from = "") {
    JobSpec s;
    s.data.source = DataSource::kFashionMnist;
    s.data.path = data_path;
    s.recovery.dir = recovery_dir;
    s.recovery.resume_from = resume_from;
    return s;
  }
  std::string path(const std::string& rel) const { return (dir_ / rel).string(); }

  fs::path dir_;
  PathPolicy policy_;
};

TEST_F(PathPolicyTest, PathsInsideTheJobAndDataDirectoriesAreAllowed) {
  EXPECT_TRUE(check_job_paths(spec(path("data/mnist")), policy_).is_ok());
  EXPECT_TRUE(check_job_paths(spec(path("data")), policy_).is_ok()) << "the root itself";
  EXPECT_TRUE(check_job_paths(spec("input/train.gz", "checkpoints"), policy_).is_ok())
      << "relative: inside the job directory";
  EXPECT_TRUE(
      check_job_paths(
          spec(path("data/mnist"), path("work/j-1/ckpt"), path("work/j-1/ckpt/step-10")), policy_)
          .is_ok());
  EXPECT_TRUE(check_job_paths(spec(path("data/mnist/../mnist")), policy_).is_ok());
  EXPECT_TRUE(check_job_paths(spec(""), policy_).is_ok()) << "unset fields are not checked";
}

TEST_F(PathPolicyTest, DotDotEscapesAreRefusedWithTheFieldNamed) {
  Status s = check_job_paths(spec("../../secret/key.pem"), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "data.path '../../secret/key.pem'")) << s.message();
  EXPECT_TRUE(contains(s.message(), path("secret/key.pem")))
      << "says where it leads: " << s.message();
  EXPECT_TRUE(contains(s.message(), "outside the directories a job may read")) << s.message();
  EXPECT_TRUE(contains(s.message(), path("data"))) << "lists where it may read: " << s.message();

  s = check_job_paths(spec(path("data/mnist"), path("data/../secret")), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "recovery.dir")) << s.message();
  EXPECT_TRUE(contains(s.message(), "may write")) << s.message();
}

TEST_F(PathPolicyTest, AbsolutePathsOutsideTheRootsAreRefused) {
  Status s = check_job_paths(spec("/etc/passwd"), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "data.path '/etc/passwd'")) << s.message();

  s = check_job_paths(spec(path("data/mnist"), "", path("secret/key.pem")), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "recovery.resume_from")) << s.message();

  // Data directories are read-only: a job may not write its checkpoints there.
  s = check_job_paths(spec(path("data/mnist"), path("data/ckpt")), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "recovery.dir")) << s.message();

  // A sibling whose name starts with a root's name is not inside it.
  fs::create_directories(dir_ / "data-private");
  s = check_job_paths(spec(path("data-private")), policy_);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.message();
}

TEST_F(PathPolicyTest, SymlinksLeadingOutAreRefusedWhenResolved) {
  fs::create_directory_symlink(dir_ / "secret", dir_ / "work" / "j-1" / "escape");
  fs::create_directory_symlink(dir_ / "secret", dir_ / "data" / "shared");
  fs::create_directory_symlink(dir_ / "data" / "mnist", dir_ / "work" / "j-1" / "mnist");

  policy_.resolve_symlinks = true;  // the daemon's check
  Status s = check_job_paths(spec("escape/key.pem"), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "data.path 'escape/key.pem'")) << s.message();
  EXPECT_TRUE(contains(s.message(), path("secret/key.pem"))) << "the real target: " << s.message();
  s = check_job_paths(spec(path("data/shared/key.pem")), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << "a link inside a data dir";
  s = check_job_paths(spec(path("data/mnist"), "escape/ckpt"), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << "not created yet, below a link";
  EXPECT_TRUE(contains(s.message(), "recovery.dir")) << s.message();
  EXPECT_TRUE(check_job_paths(spec("mnist/train.gz"), policy_).is_ok())
      << "a link to a data directory leads inside";

  // Without resolving (the coordinator, which cannot see the workers' disks) the same
  // paths look inside: that is why the daemon checks again.
  policy_.resolve_symlinks = false;
  EXPECT_TRUE(check_job_paths(spec("escape/key.pem"), policy_).is_ok());
}

TEST_F(PathPolicyTest, WithoutAJobDirectoryRelativePathsMustNotClimbOut) {
  policy_.job_dir.clear();  // the coordinator at SubmitJob
  EXPECT_TRUE(check_job_paths(spec("input/train.gz", "ckpt"), policy_).is_ok());
  Status s = check_job_paths(spec(path("data/mnist"), "ckpt/../../x"), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(),
                       "recovery.dir 'ckpt/../../x' climbs out of the job "
                       "directory"))
      << s.message();
  s = check_job_paths(spec("/etc/passwd"), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "its job directory")) << s.message();
}

TEST_F(PathPolicyTest, SourcesWithoutFilesIgnoreDataPath) {
  JobSpec s = spec("/etc/passwd");
  s.data.source = DataSource::kSynthetic;
  EXPECT_TRUE(check_job_paths(s, policy_).is_ok());
  s.data.source = DataSource::kCriteo;
  EXPECT_EQ(check_job_paths(s, policy_).code(), StatusCode::kInvalidArgument);
}

TEST_F(PathPolicyTest, NulBytesAreRefused) {
  Status s = check_job_paths(spec(path("data/mnist") + std::string("\0/../../etc", 11)), policy_);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "data.path must not contain NUL")) << s.message();
}

}  // namespace
}  // namespace tern
