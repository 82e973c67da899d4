// The diffusionlm operators: their schemas (the one TORCH_LIBRARY block of the namespace) and the CPU glue that
// turns tensors into the raw-pointer kernels of cpu_kernels.h. The CUDA glue is ops_cuda.cu, built where CUDA
// is. The fake (meta) kernels that torch.compile and CUDA graph capture trace through are registered in Python
// by diffusionlm/ops/csrc.py, which the block names so torch can import it when it needs them. Python custom
// ops of the namespace (swiglu.py and others) are FRAGMENTs and coexist with this block.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu_kernels.h"
#include "op_checks.h"

namespace dlm {
namespace {

// torch >= 2.5 calls it set_python_module; older releases (JetPack's wheels among them) impl_abstract_pystub.
template <typename Library>
auto name_python_module(Library& m, const char* module, int) -> decltype(m.set_python_module(module), void()) {
  m.set_python_module(module);
}
template <typename Library>
void name_python_module(Library& m, const char* module, long) {
  m.impl_abstract_pystub(module);
}

std::tuple<at::Tensor, at::Tensor> draw(const at::Tensor& logits_in, const at::Tensor& key0_in,
                                        const at::Tensor& key1_in, double temperature, int64_t forbid_a,
                                        int64_t forbid_b) {
  check_draw_args(logits_in, key0_in, key1_in, temperature);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor key0 = key0_in.contiguous();
  const at::Tensor key1 = key1_in.contiguous();
  const int64_t rows = logits.size(0);
  at::Tensor tokens = at::empty({rows}, logits.options().dtype(at::kLong));
  at::Tensor confidence = at::empty({rows}, logits.options().dtype(at::kDouble));
  const DrawRows args{key0.const_data_ptr<int64_t>(),
                      key1.const_data_ptr<int64_t>(),
                      tokens.mutable_data_ptr<int64_t>(),
                      confidence.mutable_data_ptr<double>(),
                      rows,
                      logits.size(1),
                      temperature,
                      forbid_a,
                      forbid_b};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "diffusionlm::draw",
                                  [&] { draw_cpu(logits.const_data_ptr<scalar_t>(), args); });
  return {tokens, confidence};
}

at::Tensor uniforms(const at::Tensor& key0_in, const at::Tensor& key1_in, int64_t width) {
  TORCH_CHECK(key0_in.scalar_type() == at::kLong && key1_in.scalar_type() == at::kLong,
              "diffusionlm::uniforms: keys must be int64");
  TORCH_CHECK(key0_in.dim() == 1 && key0_in.sizes() == key1_in.sizes(),
              "diffusionlm::uniforms: keys must be two [N] tensors");
  TORCH_CHECK(width >= 0, "diffusionlm::uniforms: width must be >= 0");
  const at::Tensor key0 = key0_in.contiguous();
  const at::Tensor key1 = key1_in.contiguous();
  at::Tensor out = at::empty({key0.size(0), width}, key0.options().dtype(at::kDouble));
  uniforms_cpu(key0.const_data_ptr<int64_t>(), key1.const_data_ptr<int64_t>(), out.mutable_data_ptr<double>(),
               key0.size(0), width);
  return out;
}

std::tuple<at::Tensor, std::optional<at::Tensor>> rms_norm(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                           double eps, const std::optional<at::Tensor>& residual_in) {
  check_rms_norm_args(x_in, weight_in, residual_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const int64_t width = x.size(-1);
  const int64_t rows = x.numel() / width;
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  std::optional<at::Tensor> residual;
  std::optional<at::Tensor> new_residual;
  if (residual_in.has_value()) {
    residual = residual_in->contiguous();
    new_residual = at::empty_like(x, at::MemoryFormat::Contiguous);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "diffusionlm::rms_norm", [&] {
    const scalar_t* r = residual ? residual->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* nr = new_residual ? new_residual->mutable_data_ptr<scalar_t>() : nullptr;
    if (weight.scalar_type() == x.scalar_type()) {
      rms_norm_cpu(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), r,
                   out.mutable_data_ptr<scalar_t>(), nr, rows, width, eps);
    } else {
      rms_norm_cpu(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<float>(), r,
                   out.mutable_data_ptr<scalar_t>(), nr, rows, width, eps);
    }
  });
  return {out, new_residual};
}

}  // namespace
}  // namespace dlm

TORCH_LIBRARY(diffusionlm, m) {
  dlm::name_python_module(m, "diffusionlm.ops.csrc", 0);
  // A token and its confidence for every row of logits [N, V], in one pass over V (see draw_state.h).
  m.def(
      "draw(Tensor logits, Tensor key0, Tensor key1, float temperature, int forbid_a, int forbid_b)"
      " -> (Tensor tokens, Tensor confidence)");
  // RMSNorm for inference, with the residual addition before it fused in when a residual is given.
  m.def("rms_norm(Tensor x, Tensor weight, float eps, Tensor? residual) -> (Tensor out, Tensor? new_residual)");
  // The float64 uniforms [N, width] that draw uses, for checking them against streams.py (CPU only).
  m.def("uniforms(Tensor key0, Tensor key1, int width) -> Tensor");
}

TORCH_LIBRARY_IMPL(diffusionlm, CPU, m) {
  m.impl("draw", &dlm::draw);
  m.impl("uniforms", &dlm::uniforms);
  m.impl("rms_norm", &dlm::rms_norm);
}
