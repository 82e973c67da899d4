// CPU kernels of diffusionlm::draw and diffusionlm::uniforms: rows in parallel on torch's thread pool, each row
// one sequential pass over its vocabulary through draw_state.h, the arithmetic the CUDA kernel shares.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "cpu_kernels.h"
#include "draw_state.h"
#include "uniforms.h"

namespace dlm {
namespace {

template <typename T>
double as_double(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return static_cast<float>(x);  // exact for half, bfloat16 and float
  }
}

// Rows per parallel chunk: enough entries that a chunk outweighs handing it to a thread.
int64_t rows_per_chunk(int64_t width) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(width, 1)); }

template <typename T, bool kGreedy>
void draw_rows(const T* logits, const DrawRows& a) {
  at::parallel_for(0, a.rows, rows_per_chunk(a.vocab), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* row_logits = logits + row * a.vocab;
      // keys hold values in [0, 2^32): the low 32 bits are the whole key
      const auto k0 = static_cast<uint32_t>(a.key0[row]);
      const auto k1 = static_cast<uint32_t>(a.key1[row]);
      DrawState s = empty_draw_state();
      for (int64_t v = 0; v < a.vocab; ++v) {
        const double logit = (v == a.forbid_a || v == a.forbid_b) ? kNegInf : as_double(row_logits[v]);
        draw_push<kGreedy>(s, v, logit, a.temperature, k0, k1);
      }
      a.tokens[row] = s.best_at;
      a.confidence[row] = draw_confidence(s);
    }
  });
}

}  // namespace

template <typename T>
void draw_cpu(const T* logits, const DrawRows& rows) {
  if (rows.temperature == 0.0) {
    draw_rows<T, true>(logits, rows);
  } else {
    draw_rows<T, false>(logits, rows);
  }
}

template void draw_cpu<float>(const float*, const DrawRows&);
template void draw_cpu<double>(const double*, const DrawRows&);
template void draw_cpu<c10::Half>(const c10::Half*, const DrawRows&);
template void draw_cpu<c10::BFloat16>(const c10::BFloat16*, const DrawRows&);

void uniforms_cpu(const int64_t* key0, const int64_t* key1, double* out, int64_t rows, int64_t width) {
  at::parallel_for(0, rows, rows_per_chunk(width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const auto k0 = static_cast<uint32_t>(key0[row]);
      const auto k1 = static_cast<uint32_t>(key1[row]);
      for (int64_t v = 0; v < width; ++v) out[row * width + v] = vocab_uniform(k0, k1, static_cast<uint32_t>(v));
    }
  });
}

}  // namespace dlm
