#include "trainer/process/device.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(Device, CpuAndAutoWithoutCuda) {
  auto cpu = resolve_device(DeviceKind::kCpu, 0);
  ASSERT_TRUE(cpu.is_ok());
  EXPECT_TRUE(cpu->is_cpu());
  EXPECT_EQ(backend_for(*cpu), "gloo");
  if (torch::cuda::is_available())
    GTEST_SKIP() << "CUDA present: the no-CUDA paths are not reachable";
  auto a = resolve_device(DeviceKind::kAuto, 1);
  ASSERT_TRUE(a.is_ok());
  EXPECT_TRUE(a->is_cpu());
  auto c = resolve_device(DeviceKind::kCuda, 0);
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find("device: cuda"), std::string::npos);
}

}  // namespace
}  // namespace tern
