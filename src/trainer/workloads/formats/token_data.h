// TokenData: data.source tokens, a language model's data as TrainingData (workloads/data.h).
//
// A token file is a flat stream of little-endian token ids (data.token_dtype uint16 | uint32),
// memory-mapped read-only and never copied whole. A training sample is a window of block_size
// tokens (Batch.x, int64 [B, block_size]) and the block_size tokens after each (Batch.y, the
// next-token targets). Sample i of the training split starts at an offset drawn from
// (data.seed, i), uniform over the file; one epoch has (tokens - 1) / block_size samples, so an
// epoch reads about every token once, and the sampler (loop/sampler.h) deals them to the ranks
// in a new order every epoch. Sample i is a pure function of (seed, i): a resumed or
// replacement rank reads exactly the samples the run it continues would have read.
// The test split is data.test_path, or the last data.test_fraction of data.path (then the
// training split ends where it starts); its samples are the consecutive non-overlapping
// windows, so an evaluation covers the split once.
//
// Opening checks every id against data.vocab_size (naming the file and the first offending
// token's index) and that the split holds more than block_size tokens: both are exit-2 errors
// (INVALID_ARGUMENT) before training starts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/workloads/data.h"

namespace tern {

class TokenData : public TrainingData {
 public:
  static Result<std::unique_ptr<TokenData>> open(const DataSpec& spec);
  ~TokenData() override;

  int64_t train_size() const override;
  int64_t test_size() const override;
  Batch train_batch(const std::vector<int64_t>& indices) override;
  Batch test_batch(int64_t begin, int64_t end) override;

  int64_t train_tokens() const { return train_.count; }
  int64_t test_tokens() const { return test_.count; }
  // Offset of training sample `index`'s first token.
  int64_t train_offset(int64_t index) const;

 public:
  struct Mapping;  // a read-only memory map of one token file (token_data.cc)

 private:
  struct Split {
    std::shared_ptr<Mapping> map;  // the file
    int64_t begin = 0;             // first token of the split in the file
    int64_t count = 0;             // tokens in the split
  };
  TokenData() = default;
  // Windows at `offsets` (token positions within `split`): inputs and next-token targets.
  Batch windows(const Split& split, const std::vector<int64_t>& offsets) const;
  int64_t token(const Split& split, int64_t i) const;

  Split train_, test_;
  int64_t block_ = 0;
  uint64_t seed_ = 0;
  bool wide_ = false;  // uint32 ids
};

}  // namespace tern
