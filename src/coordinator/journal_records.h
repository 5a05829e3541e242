// The coordinator's journal records: what one job or worker looks like inside a journal
// payload (journal.h frames and checksums the payloads; this file gives them meaning).
//
// One JSON object per record, {"type": "job" | "worker", "id": ..., ...}; on replay the latest
// record of an id wins, so a record always carries the whole job or worker. Fields that older
// coordinators did not write are optional with the old behaviour as default; values no
// coordinator writes are refused (the record is reported as unreadable, never dropped).
//
// Pure functions over strings: no I/O, no locks; callable from any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/types.h"

namespace tern {

std::string encode_job_record(const Job& job);
std::string encode_worker_record(const Worker& worker);

// Decodes one journal record; `job` or `worker` is set by its type. Never throws: a record
// with a valid checksum can still be something else (a false match when repair resyncs), which
// is DATA_LOSS naming what was found.
Status decode_journal_record(const std::string& payload, std::optional<Job>* job,
                             std::optional<Worker>* worker);

// The records of a compacted journal: one per worker (by id), then one per job in submission
// order (so replay restores next_job_seq and the order `tern jobs` shows).
std::vector<std::string> compacted_journal_records(const std::map<std::string, Job>& jobs,
                                                   const std::map<std::string, Worker>& workers);

// A journal payload (or any text from the network) as it may appear in an error message: at
// most 80 bytes, printable ASCII ('?' for the rest), "..." when cut.
std::string printable(const std::string& payload);

}  // namespace tern
