#include "coordinator/log_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "coordinator/core_lock.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

// The rank of a file named rank-<r>.log, or -1.
int rank_of_file(const std::string& name) {
  constexpr std::string_view kPrefix = "rank-", kSuffix = ".log";
  if (name.size() <= kPrefix.size() + kSuffix.size() ||
      name.compare(0, kPrefix.size(), kPrefix) != 0 ||
      name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
    return -1;
  }
  int rank = -1;
  const char* end = name.data() + name.size() - kSuffix.size();
  auto [ptr, err] = std::from_chars(name.data() + kPrefix.size(), end, rank);
  return err == std::errc() && ptr == end && rank >= 0 ? rank : -1;
}

}  // namespace

std::string LogStore::path(const std::string& job_id, int rank) const {
  return options_.dir + "/" + job_id + "/rank-" + std::to_string(rank) + ".log";
}

void LogStore::load() {
  std::lock_guard<std::mutex> lock(mu_);
  std::error_code ec;
  for (fs::directory_iterator job(options_.dir, ec), end; !ec && job != end; job.increment(ec)) {
    const std::string job_id = job->path().filename().string();
    std::error_code fec;
    for (fs::directory_iterator f(job->path(), fec), fend; !fec && f != fend; f.increment(fec)) {
      const int rank = rank_of_file(f->path().filename().string());
      std::error_code sec;
      const auto bytes = rank >= 0 ? fs::file_size(f->path(), sec) : 0;
      if (rank < 0 || sec) continue;
      sizes_[{job_id, rank}] = static_cast<int64_t>(bytes);
      job_bytes_[job_id] += static_cast<int64_t>(bytes);
    }
  }
}

int64_t LogStore::size(const std::string& job_id, int rank) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sizes_.find({job_id, rank});
  return it == sizes_.end() ? 0 : it->second;
}

uint64_t LogStore::bytes_dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void LogStore::append(const std::string& job_id, int rank, int64_t offset,
                      const std::string& chunk) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t& size = sizes_[{job_id, rank}];
  const int64_t end = offset + static_cast<int64_t>(chunk.size());
  if (end <= size) return;  // a retried batch: already have it
  std::string data = offset < size ? chunk.substr(static_cast<size_t>(size - offset)) : chunk;
  const int64_t chunk_cap = std::max<int64_t>(256, options_.max_chunk_bytes);
  std::string marker;
  if (static_cast<int64_t>(data.size()) > chunk_cap) {
    marker = "\n[tern: " + std::to_string(static_cast<int64_t>(data.size()) - chunk_cap + 100) +
             " bytes of one log chunk dropped (coordinator.max_log_chunk_bytes)]\n";
    dropped_ += data.size() - static_cast<size_t>(chunk_cap - 100);
    data.resize(static_cast<size_t>(chunk_cap - 100));  // marker included, under the cap
  }
  int64_t& used = job_bytes_[job_id];
  const int64_t quota = options_.max_bytes_per_job;
  const int64_t room = std::max<int64_t>(0, quota - used);
  if (static_cast<int64_t>(data.size()) > room) {
    dropped_ += data.size() - static_cast<size_t>(room);
    data.resize(static_cast<size_t>(room));
    marker.clear();
    if (capped_.insert({job_id, rank}).second) {
      marker = "\n[tern: log truncated: job " + job_id + " reached its log quota of " +
               std::to_string(quota) +
               " bytes (coordinator.max_log_bytes_per_job); later output is dropped]\n";
      spdlog::warn("job {} rank {}: log quota of {} bytes reached; dropping later output", job_id,
                   rank, quota);
    }
  }
  if (data.empty() && marker.empty()) return;
  const int64_t added = static_cast<int64_t>(data.size() + marker.size());
  size += added;
  used += added;
  queue_.push_back({path(job_id, rank), data + marker});
}

void LogStore::flush() {
  CoreLock::forbid_held("LogStore::flush");
  std::lock_guard<std::mutex> io(io_mu_);
  std::deque<Pending> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(queue_);
  }
  for (const Pending& p : batch) {
    std::error_code ec;
    fs::create_directories(fs::path(p.path).parent_path(), ec);
    std::ofstream out(p.path, std::ios::binary | std::ios::app);
    out << p.bytes;
    out.flush();
    if (!out) spdlog::error("log {}: cannot append {} bytes", p.path, p.bytes.size());
  }
}

}  // namespace tern
