// Tests of model/file_io.h (ReadFile, WriteFileAtomic, AtomicFileWriter) and model/random.h
// (SplitMix64 against the published splitmix64 reference values).
#include "model/file_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/random.h"
#include "tests/test_util.h"

namespace st {
namespace {

namespace fs = std::filesystem;
using test_util::Contains;
using test_util::FileContents;  // read independently of ReadFile
using test_util::ListDir;
using test_util::TestDir;
using test_util::WriteFile;

TEST(ReadFileTest, ReadsWholeFilesBinarySafe) {
  const std::string dir = TestDir();
  std::string bytes(200000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  WriteFile(dir + "/a.bin", bytes);
  absl::StatusOr<std::string> r = ReadFile(dir + "/a.bin");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, bytes);

  WriteFile(dir + "/empty", "");
  r = ReadFile(dir + "/empty", "--prompt_file");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "");
}

TEST(ReadFileTest, ErrorsNameThePathAndWhat) {
  const std::string dir = TestDir();
  absl::StatusOr<std::string> r = ReadFile(dir + "/missing.txt", "--prompt_file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(r.status(), "cannot open --prompt_file '" + dir + "/missing.txt'"))
      << r.status();
  EXPECT_TRUE(Contains(r.status(), "No such file")) << r.status();

  r = ReadFile(dir, "--prompt_file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "--prompt_file '" + dir + "' is a directory; give a file");

  r = ReadFile(dir);  // no `what`: the path alone
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "'" + dir + "' is a directory; give a file");

  r = ReadFile("", "--file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status(), "--file")) << r.status();

  WriteFile(dir + "/secret", "x");
  chmod((dir + "/secret").c_str(), 0);
  r = ReadFile(dir + "/secret");
  if (geteuid() != 0) {  // root reads anything
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_TRUE(Contains(r.status(), dir + "/secret")) << r.status();
  }
  chmod((dir + "/secret").c_str(), 0600);
}

TEST(WriteFileAtomicTest, CreatesAndReplaces) {
  const std::string dir = TestDir();
  const std::string path = dir + "/out.json";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  EXPECT_EQ(FileContents(path), "first");
  ASSERT_TRUE(WriteFileAtomic(path, std::string("second\0with nul", 15)).ok());
  EXPECT_EQ(FileContents(path), std::string("second\0with nul", 15));
  ASSERT_TRUE(WriteFileAtomic(path, "").ok());
  EXPECT_EQ(FileContents(path), "");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"out.json"});  // no temp file left
}

TEST(WriteFileAtomicTest, FailureKeepsTheOldFileAndLeavesNoTemp) {
  const std::string dir = TestDir();
  // The parent directory is missing: an error naming the path, nothing created.
  absl::Status s = WriteFileAtomic(dir + "/no/such/dir/out.json", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s, dir + "/no/such/dir/out.json")) << s;
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{});

  // An existing directory at the path is refused and kept.
  fs::create_directories(dir + "/a_dir");
  s = WriteFileAtomic(dir + "/a_dir", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "'" + dir + "/a_dir' is a directory")) << s;
  EXPECT_TRUE(fs::is_directory(dir + "/a_dir"));

  // A directory nobody may create files in: the old file survives untouched.
  if (geteuid() != 0) {  // root ignores modes
    const std::string locked = dir + "/locked";
    fs::create_directories(locked);
    WriteFile(locked + "/keep.json", "old contents");
    ASSERT_EQ(chmod(locked.c_str(), 0555), 0);
    s = WriteFileAtomic(locked + "/keep.json", "new contents");
    chmod(locked.c_str(), 0755);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_TRUE(Contains(s, locked + "/keep.json")) << s;
    EXPECT_TRUE(Contains(s, "writable")) << s;
    EXPECT_EQ(FileContents(locked + "/keep.json"), "old contents");
    EXPECT_EQ(ListDir(locked), std::vector<std::string>{"keep.json"});
  }
}

TEST(WriteFileAtomicTest, FullDiskNamesThePathAndAsksForSpace) {
  // A full disk cannot be arranged here without privileges: check the status every write,
  // sync and close error of AtomicFileWriter goes through, for ENOSPC.
  absl::Status s = FileError("cannot write", "/data/out.stmf.tmp.1", ENOSPC);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Contains(s, "'/data/out.stmf.tmp.1'")) << s;
  EXPECT_TRUE(Contains(s, "free space")) << s;
}

TEST(AtomicFileWriterTest, NothingChangesWithoutCommit) {
  const std::string dir = TestDir();
  const std::string path = dir + "/model.bin";
  WriteFile(path, "original");
  {
    absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Begin(path);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->path(), path);
    EXPECT_EQ(fs::path(w->temp_path()).parent_path(), fs::path(path).parent_path());
    EXPECT_NE(w->temp_path(), path);
    ASSERT_TRUE(w->Open().ok());
    ASSERT_TRUE(w->Write("half-written").ok());
    EXPECT_TRUE(fs::exists(w->temp_path()));
    EXPECT_EQ(FileContents(path), "original");
  }  // abandoned
  EXPECT_EQ(FileContents(path), "original");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.bin"});

  // Discard removes the temp file at once; a moved-from writer owns nothing.
  absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Begin(path);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Open().ok());
  AtomicFileWriter moved = std::move(*w);
  EXPECT_TRUE(w->temp_path().empty());
  EXPECT_FALSE(w->Commit().ok());
  EXPECT_TRUE(fs::exists(moved.temp_path()));
  moved.Discard();
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.bin"});
}

TEST(AtomicFileWriterTest, CommitReplacesAndWritingByNameWorks) {
  const std::string dir = TestDir();
  const std::string path = dir + "/data.txt";
  WriteFile(path, "original");
  {
    absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Begin(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Open().ok());
    ASSERT_TRUE(w->Write("new ").ok());
    ASSERT_TRUE(w->Write(std::string("contents")).ok());
    ASSERT_TRUE(w->Sync().ok());
    ASSERT_TRUE(w->Commit().ok());
    EXPECT_TRUE(w->committed());
    EXPECT_TRUE(w->Commit().ok());  // a second Commit is a no-op
  }
  EXPECT_EQ(FileContents(path), "new contents");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"data.txt"});

  // A writer of its own (HDF5, a stream) writes temp_path() by its name.
  {
    absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Begin(path);
    ASSERT_TRUE(w.ok());
    WriteFile(w->temp_path(), "by name");
    ASSERT_TRUE(w->Commit().ok());
  }
  EXPECT_EQ(FileContents(path), "by name");

  // Commit without a temp file: an error naming both paths; the old file stays.
  {
    absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Begin(path);
    ASSERT_TRUE(w.ok());
    absl::Status s = w->Commit();
    ASSERT_FALSE(s.ok());
    EXPECT_TRUE(Contains(s, w->temp_path())) << s;
    EXPECT_TRUE(Contains(s, path)) << s;
    EXPECT_FALSE(w->Write("x").ok());  // not open
  }
  EXPECT_EQ(FileContents(path), "by name");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"data.txt"});
}

// Reference outputs of splitmix64.c (prng.di.unimi.it), also computed by an independent Python
// implementation: state += 0x9E3779B97F4A7C15; z = state; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
// z = (z ^ z >> 27) * 0x94D049BB133111EB; return z ^ z >> 31.
TEST(SplitMix64Test, MatchesTheReferenceStreams) {
  SplitMix64 zero(0);
  for (uint64_t want : {16294208416658607535ULL, 7960286522194355700ULL, 487617019471545679ULL,
                        17909611376780542444ULL, 1961750202426094747ULL}) {
    EXPECT_EQ(zero.Next(), want);
  }
  SplitMix64 rng(1234567);
  for (uint64_t want : {6457827717110365317ULL, 3203168211198807973ULL, 9817491932198370423ULL,
                        4593380528125082431ULL, 16408922859458223821ULL}) {
    EXPECT_EQ(rng.Next(), want);
  }
  // The stateless finaliser is the counter-based form of the same stream.
  for (uint64_t i = 0; i < 5; ++i) {
    SplitMix64 s(1234567);
    uint64_t v = 0;
    for (uint64_t k = 0; k <= i; ++k) v = s.Next();
    EXPECT_EQ(SplitMix64::Mix(1234567 + (i + 1) * SplitMix64::kGolden), v);
  }
  static_assert(SplitMix64::Mix(0) == 0, "the finaliser fixes 0");
}

TEST(SplitMix64Test, BelowStaysInRange) {
  SplitMix64 rng(42);
  for (uint64_t bound : {1ULL, 2ULL, 3ULL, 7ULL, 1000ULL, (1ULL << 63) + 1}) {
    for (int i = 0; i < 100; ++i) EXPECT_LT(rng.Below(bound), bound);
  }
}

}  // namespace
}  // namespace st
