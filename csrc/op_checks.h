// Argument checks shared by the CPU and CUDA implementations, so both reject the same calls with the same
// messages (the PyTorch fallback in diffusionlm/ops/csrc.py accepts the same arguments).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

namespace dlm {

inline bool is_supported_float(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kHalf || t == c10::kBFloat16 || t == c10::kDouble;
}

inline void check_draw_args(const at::Tensor& logits, const at::Tensor& key0, const at::Tensor& key1,
                            double temperature) {
  TORCH_CHECK(logits.dim() == 2, "diffusionlm::draw: logits must be [N, V], got ", logits.sizes());
  TORCH_CHECK(logits.size(1) > 0, "diffusionlm::draw: the vocabulary is empty");
  TORCH_CHECK(is_supported_float(logits.scalar_type()), "diffusionlm::draw: logits must be float16, bfloat16, ",
              "float32 or float64, got ", logits.scalar_type());
  for (const at::Tensor* key : {&key0, &key1}) {
    TORCH_CHECK(key->scalar_type() == c10::kLong, "diffusionlm::draw: keys must be int64, got ",
                key->scalar_type());
    TORCH_CHECK(key->dim() == 1 && key->size(0) == logits.size(0),
                "diffusionlm::draw: keys must be [N] with N = ", logits.size(0), ", got ", key->sizes());
    TORCH_CHECK(key->device() == logits.device(), "diffusionlm::draw: keys and logits on different devices");
  }
  TORCH_CHECK(std::isfinite(temperature) && temperature >= 0.0,
              "diffusionlm::draw: temperature must be finite and >= 0, got ", temperature);
}

inline void check_rms_norm_args(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& residual) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "diffusionlm::rms_norm: x must be [..., D] with D > 0");
  TORCH_CHECK(is_supported_float(x.scalar_type()), "diffusionlm::rms_norm: x must be float16, bfloat16, ",
              "float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "diffusionlm::rms_norm: weight must be [",
              x.size(-1), "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() || weight.scalar_type() == c10::kFloat,
              "diffusionlm::rms_norm: weight must be float32 or x's dtype, got ", weight.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), "diffusionlm::rms_norm: weight and x on different devices");
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->scalar_type() == x.scalar_type(),
                "diffusionlm::rms_norm: residual must match x's shape and dtype");
    TORCH_CHECK(residual->device() == x.device(), "diffusionlm::rms_norm: residual and x on different devices");
  }
}

}  // namespace dlm
