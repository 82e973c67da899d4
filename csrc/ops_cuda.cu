// The CUDA glue of the diffusionlm operators (schemas in ops.cpp): checks, outputs, the current stream, dtype
// dispatch, then the launchers of draw_kernels.cuh and rms_norm_kernels.cuh. Nothing here synchronises or
// copies to the host, so the ops can be captured in a CUDA graph.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "cuda_types.h"
#include "draw_kernels.cuh"
#include "op_checks.h"
#include "rms_norm_kernels.cuh"

namespace dlm {
namespace {

std::tuple<at::Tensor, at::Tensor> draw_cuda(const at::Tensor& logits_in, const at::Tensor& key0_in,
                                             const at::Tensor& key1_in, double temperature, int64_t forbid_a,
                                             int64_t forbid_b) {
  check_draw_args(logits_in, key0_in, key1_in, temperature);
  TORCH_CHECK(logits_in.size(0) <= std::numeric_limits<int32_t>::max(), "diffusionlm::draw: too many rows");
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor key0 = key0_in.contiguous();
  const at::Tensor key1 = key1_in.contiguous();
  const int64_t rows = logits.size(0);
  at::Tensor tokens = at::empty({rows}, logits.options().dtype(at::kLong));
  at::Tensor confidence = at::empty({rows}, logits.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "diffusionlm::draw", [&] {
    C10_CUDA_CHECK(launch_draw(reinterpret_cast<const cuda_t<scalar_t>*>(logits.const_data_ptr<scalar_t>()),
                               key0.const_data_ptr<int64_t>(), key1.const_data_ptr<int64_t>(),
                               tokens.mutable_data_ptr<int64_t>(), confidence.mutable_data_ptr<double>(), rows,
                               logits.size(1), temperature, forbid_a, forbid_b, stream));
  });
  return {tokens, confidence};
}

std::tuple<at::Tensor, std::optional<at::Tensor>> rms_norm_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                                double eps,
                                                                const std::optional<at::Tensor>& residual_in) {
  check_rms_norm_args(x_in, weight_in, residual_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const int64_t width = x.size(-1);
  const int64_t rows = x.numel() / width;
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(), "diffusionlm::rms_norm: too many rows");
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  std::optional<at::Tensor> residual;
  std::optional<at::Tensor> new_residual;
  if (residual_in.has_value()) {
    residual = residual_in->contiguous();
    new_residual = at::empty_like(x, at::MemoryFormat::Contiguous);
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "diffusionlm::rms_norm", [&] {
    using T = cuda_t<scalar_t>;
    const auto* xp = reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>());
    const auto* rp = residual ? reinterpret_cast<const T*>(residual->const_data_ptr<scalar_t>()) : nullptr;
    auto* op = reinterpret_cast<T*>(out.mutable_data_ptr<scalar_t>());
    auto* np = new_residual ? reinterpret_cast<T*>(new_residual->mutable_data_ptr<scalar_t>()) : nullptr;
    if (weight.scalar_type() == x.scalar_type()) {
      const auto* wp = reinterpret_cast<const T*>(weight.const_data_ptr<scalar_t>());
      C10_CUDA_CHECK(launch_rms_norm(xp, wp, rp, op, np, rows, width, eps, stream));
    } else {
      C10_CUDA_CHECK(launch_rms_norm(xp, weight.const_data_ptr<float>(), rp, op, np, rows, width, eps, stream));
    }
  });
  return {out, new_residual};
}

}  // namespace
}  // namespace dlm

TORCH_LIBRARY_IMPL(diffusionlm, CUDA, m) {
  m.impl("draw", &dlm::draw_cuda);
  m.impl("rms_norm", &dlm::rms_norm_cuda);
}
