#include "trainer/workloads/image/models.h"

namespace tern {

at::Tensor Model::loss(const at::Tensor& out, const Batch& batch) {
  return torch::nn::functional::cross_entropy(out, batch.y);
}

at::Tensor Model::loss_per_sample(const at::Tensor& out, const Batch& batch) {
  return torch::nn::functional::cross_entropy(
      out, batch.y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
}

int64_t Model::correct(const at::Tensor& out, const Batch& batch) {
  return out.argmax(1).eq(batch.y).sum().item<int64_t>();
}

Mlp::Mlp() {
  fc1_ = register_module("fc1", torch::nn::Linear(784, 512));
  fc2_ = register_module("fc2", torch::nn::Linear(512, 256));
  fc3_ = register_module("fc3", torch::nn::Linear(256, 10));
}

at::Tensor Mlp::forward(const Batch& batch) {
  auto x = batch.x.reshape({batch.x.size(0), -1});
  x = torch::relu(fc1_->forward(x));
  x = torch::relu(fc2_->forward(x));
  return fc3_->forward(x);
}

at::Tensor Mlp::forward_traced(const Batch& batch, std::vector<LinearTrace>* trace) {
  auto layer = [&](torch::nn::Linear& fc, const at::Tensor& x) {
    at::Tensor y = fc->forward(x);
    y.retain_grad();
    trace->push_back({x.detach(), y, fc->weight, fc->bias});
    return y;
  };
  auto x = batch.x.reshape({batch.x.size(0), -1});
  x = torch::relu(layer(fc1_, x));
  x = torch::relu(layer(fc2_, x));
  return layer(fc3_, x);
}

Cnn::Cnn() {
  conv1_ =
      register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 5).padding(2)));
  conv2_ =
      register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)));
  fc1_ = register_module("fc1", torch::nn::Linear(3136, 512));
  fc2_ = register_module("fc2", torch::nn::Linear(512, 10));
}

at::Tensor Cnn::forward(const Batch& batch) {
  auto x = torch::max_pool2d(torch::relu(conv1_->forward(batch.x)), 2);
  x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);
  x = x.reshape({x.size(0), -1});
  x = torch::relu(fc1_->forward(x));
  return fc2_->forward(x);
}

Result<std::shared_ptr<Model>> make_image_model(const ModelSpec& spec) {
  if (spec.type == ModelType::kMlp) return std::shared_ptr<Model>(std::make_shared<Mlp>());
  if (spec.type == ModelType::kCnn) return std::shared_ptr<Model>(std::make_shared<Cnn>());
  return invalid_argument("model.type '" + name_of(spec.type) + "' is not an image model");
}

}  // namespace tern
