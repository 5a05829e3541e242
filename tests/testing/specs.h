// Job spec texts shared by the tests of the spec and YAML readers: the smallest valid spec
// (two workers, the MLP on synthetic data) that a test edits into the case it needs.
#pragma once

namespace tern::testing_specs {

constexpr const char* kMinimalSpec = R"(name: t1
workers: 2
model: {type: mlp}
data: {source: synthetic, train_size: 256}
train:
  epochs: 2
  batch_size: 32
  lr: 0.1
sync: {strategy: ssgd}
)";

}  // namespace tern::testing_specs
