// CPU kernel of diffusionlm::rms_norm: rows in parallel, two passes over each row (sum of squares, then scale).
//
// With a residual, h = x + residual is rounded to x's dtype before it is normalised, as the model's unfused
// `x = x + branch; norm(x)` rounds it, so out is exactly the norm of the returned new_residual.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu_kernels.h"

namespace dlm {

template <typename T, typename W>
void rms_norm_cpu(const T* x, const W* weight, const T* residual, T* out, T* new_residual, int64_t rows,
                  int64_t width, double eps) {
  // accumulation: float for 16- and 32-bit inputs, double for double
  using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int64_t grain = std::max<int64_t>(1, 16384 / width);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* h = x + row * width;  // what is normalised: x, or x + residual rounded to T
      if (residual != nullptr) {
        const T* xr = h;
        const T* rr = residual + row * width;
        T* hr = new_residual + row * width;
        for (int64_t i = 0; i < width; ++i) hr[i] = static_cast<T>(static_cast<Acc>(xr[i]) + static_cast<Acc>(rr[i]));
        h = hr;
      }
      Acc sum_sq = 0;
      for (int64_t i = 0; i < width; ++i) {
        const auto hi = static_cast<Acc>(h[i]);
        sum_sq += hi * hi;
      }
      const Acc rstd = Acc(1) / std::sqrt(sum_sq / static_cast<Acc>(width) + static_cast<Acc>(eps));
      T* outr = out + row * width;
      for (int64_t i = 0; i < width; ++i) {
        outr[i] = static_cast<T>(static_cast<Acc>(h[i]) * rstd * static_cast<Acc>(weight[i]));
      }
    }
  });
}

// weight in x's dtype, or float32 (a float32 norm weight beside 16-bit activations)
template void rms_norm_cpu<float, float>(const float*, const float*, const float*, float*, float*, int64_t, int64_t,
                                         double);
template void rms_norm_cpu<double, double>(const double*, const double*, const double*, double*, double*, int64_t,
                                           int64_t, double);
template void rms_norm_cpu<double, float>(const double*, const float*, const double*, double*, double*, int64_t,
                                          int64_t, double);
template void rms_norm_cpu<c10::Half, c10::Half>(const c10::Half*, const c10::Half*, const c10::Half*, c10::Half*,
                                                 c10::Half*, int64_t, int64_t, double);
template void rms_norm_cpu<c10::Half, float>(const c10::Half*, const float*, const c10::Half*, c10::Half*,
                                             c10::Half*, int64_t, int64_t, double);
template void rms_norm_cpu<c10::BFloat16, c10::BFloat16>(const c10::BFloat16*, const c10::BFloat16*,
                                                         const c10::BFloat16*, c10::BFloat16*, c10::BFloat16*,
                                                         int64_t, int64_t, double);
template void rms_norm_cpu<c10::BFloat16, float>(const c10::BFloat16*, const float*, const c10::BFloat16*,
                                                 c10::BFloat16*, c10::BFloat16*, int64_t, int64_t, double);

}  // namespace dlm
