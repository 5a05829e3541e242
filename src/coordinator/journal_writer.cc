#include "coordinator/journal_writer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "coordinator/core_lock.h"

namespace tern {

JournalWriter::JournalWriter(std::unique_ptr<Journal> journal,
                             std::unique_ptr<HighWaterMark> job_ids, JournalWriterOptions options)
    : journal_(std::move(journal)),
      job_ids_(std::move(job_ids)),
      options_(std::move(options)),
      job_ids_target_(job_ids_->value()),
      record_count_(journal_->record_count()) {
  committer_ = std::thread([this] { run(); });
}

JournalWriter::~JournalWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  queued_.notify_one();
  committer_.join();
}

Status JournalWriter::enqueue_locked(Entry entry) {
  if (!failed_.is_ok()) return failed_;
  for (const std::string& p : entry.payloads) TERN_RETURN_IF_ERROR(check_journal_payload(p));
  record_count_ = entry.rewrite ? entry.payloads.size() : record_count_ + entry.payloads.size();
  queue_.push_back(std::move(entry));
  ++next_ticket_;
  queued_.notify_one();
  return Status::ok();
}

Status JournalWriter::append(std::string payload) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e;
  e.payloads.push_back(std::move(payload));
  return enqueue_locked(std::move(e));
}

Status JournalWriter::rewrite(std::vector<std::string> payloads) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e;
  e.rewrite = true;
  e.payloads = std::move(payloads);
  return enqueue_locked(std::move(e));
}

void JournalWriter::advance_job_ids(uint64_t v) {
  std::lock_guard<std::mutex> lock(mu_);
  if (v <= job_ids_target_) return;
  job_ids_target_ = v;
  // An entry of its own, so that sync() waits for the mark even when no record follows.
  (void)enqueue_locked(Entry{});
}

size_t JournalWriter::record_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return record_count_;
}

Status JournalWriter::sync() {
  CoreLock::forbid_held("JournalWriter::sync");  // a wait for the disk, so never under it
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t ticket = next_ticket_ - 1;
  written_.wait(lock, [&] { return durable_ >= ticket || !failed_.is_ok(); });
  return durable_ >= ticket ? Status::ok() : failed_;
}

Status JournalWriter::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

JournalWriterStats JournalWriter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void JournalWriter::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    queued_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued is written
    std::deque<Entry> batch;
    batch.swap(queue_);
    const uint64_t last = next_ticket_ - 1;
    const uint64_t job_ids = job_ids_target_;
    if (!failed_.is_ok()) continue;  // nothing is written after a failed commit
    lock.unlock();
    JournalWriterStats done;
    Status s = commit(batch, job_ids, &done);
    lock.lock();
    stats_.commits += done.commits;
    stats_.records_written += done.records_written;
    stats_.rewrites += done.rewrites;
    if (s.is_ok()) {
      durable_ = last;
    } else {
      failed_ = unavailable("the coordinator's journal " + journal_->path() +
                            " could not be written (" + s.message() +
                            "); it refuses every change from now on and must be restarted (the "
                            "journal holds every change it acknowledged)");
      spdlog::critical("{}", failed_.message());
    }
    written_.notify_all();
  }
}

Status JournalWriter::commit(std::deque<Entry>& batch, uint64_t job_ids, JournalWriterStats* done) {
  if (options_.before_commit) options_.before_commit();
  TERN_RETURN_IF_ERROR(job_ids_->advance(job_ids));
  // The newest rewrite's snapshot holds every change queued before it.
  auto newest =
      std::find_if(batch.rbegin(), batch.rend(), [](const Entry& e) { return e.rewrite; });
  if (newest != batch.rend()) {
    spdlog::info("compacting journal: {} records -> {}", journal_->record_count(),
                 newest->payloads.size());
    TERN_RETURN_IF_ERROR(journal_->rewrite(newest->payloads));
    ++done->rewrites;
  }
  std::vector<std::string> records;
  for (auto e = newest.base(); e != batch.end(); ++e) {
    for (std::string& p : e->payloads) records.push_back(std::move(p));
  }
  if (records.empty()) return Status::ok();
  TERN_RETURN_IF_ERROR(journal_->append_batch(records));
  ++done->commits;
  done->records_written += records.size();
  return Status::ok();
}

}  // namespace tern
