// JournalWriter: group commit for the coordinator's journal, so that no file I/O happens under
// the core's mutex.
//
// The core changes its tables under its mutex and, in the same critical section, queues the
// records that describe the change (append(), rewrite() for a compaction, advance_job_ids() for
// the job-id high-water mark). Queueing only copies bytes. One committer thread takes whatever
// is queued, advances the high-water mark, performs the last queued rewrite (the records queued
// before it are in its snapshot), appends the records after it with one write and one
// fdatasync (Journal::append_batch), and then marks every ticket of the batch durable. While a
// batch is on its way to the disk the next one gathers, so N concurrent changes cost about two
// fdatasyncs instead of N.
//
// The core answers a change only after sync() returned OK, with the mutex released: whatever a
// caller is told happened is on disk (a kill -9 right after the answer loses nothing), and
// readers sync() too, so they never show a change that a crash could still take back.
//
// A failed commit (write, fdatasync, the high-water mark) is final: Journal::append_batch cuts
// the failed batch off again, so the file holds exactly what was acknowledged; but the core's
// tables already hold the changes the batch described. Every wait for them, and every later
// append(), answers UNAVAILABLE naming the error, nothing more is written, and a restart
// replays the journal as it is (PostgreSQL and etcd treat a failed fsync the same way: a retry
// cannot tell what reached the disk).
//
// Thread-safe. Lock order: the core's mutex, then this writer's (the committer takes only
// this writer's).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/journal.h"

namespace tern {

struct JournalWriterStats {
  uint64_t commits = 0;          // batches written (each one fdatasync of the journal)
  uint64_t records_written = 0;  // records appended by them (rewrites not counted)
  uint64_t rewrites = 0;         // compactions written
};

struct JournalWriterOptions {
  // Tests: runs on the committer thread before each batch is written (to hold one back).
  std::function<void()> before_commit;
};

class JournalWriter {
 public:
  // Takes a replayed journal and the job-id high-water mark, and starts the committer.
  JournalWriter(std::unique_ptr<Journal> journal, std::unique_ptr<HighWaterMark> job_ids,
                JournalWriterOptions options = {});
  // Writes what is queued, then stops the committer.
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  // ---- Cheap, no I/O: meant to be called with the core's mutex held.
  // Queues one record. INVALID_ARGUMENT for a payload the journal refuses (empty, too large;
  // nothing queued); UNAVAILABLE once a commit failed.
  Status append(std::string payload);
  // Queues a compaction: the journal becomes `payloads` (a snapshot of the whole state taken
  // after every change queued so far). Same errors as append().
  Status rewrite(std::vector<std::string> payloads);
  // The high-water mark reaches `v` before any record queued after this call is written.
  void advance_job_ids(uint64_t v);
  // Records the journal will hold once everything queued is written.
  size_t record_count() const;

  // ---- Blocking: never with the core's mutex held.
  // Returns once everything queued before the call is on disk: OK, or the commit's failure
  // (UNAVAILABLE) when a batch it waits for did not make it.
  Status sync();
  // OK while every commit so far succeeded.
  Status health() const;
  JournalWriterStats stats() const;

 private:
  struct Entry {
    bool rewrite = false;
    std::vector<std::string> payloads;  // a rewrite's snapshot, or the records to append
  };
  Status enqueue_locked(Entry entry);
  void run();
  // Writes one batch (no lock held); counts what it wrote in *done.
  Status commit(std::deque<Entry>& batch, uint64_t job_ids, JournalWriterStats* done);

  std::unique_ptr<Journal> journal_;        // the committer's alone after construction
  std::unique_ptr<HighWaterMark> job_ids_;  // likewise
  JournalWriterOptions options_;

  mutable std::mutex mu_;
  std::condition_variable queued_;   // the committer waits for work
  std::condition_variable written_;  // sync() waits for its ticket
  std::deque<Entry> queue_;
  uint64_t job_ids_target_ = 0;
  uint64_t next_ticket_ = 1;  // the ticket of the next entry queued
  uint64_t durable_ = 0;      // every ticket up to this one is on disk
  size_t record_count_ = 0;
  Status failed_;  // the first failed commit (then final)
  bool stop_ = false;
  JournalWriterStats stats_;
  std::thread committer_;
};

}  // namespace tern
