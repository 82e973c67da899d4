// CUDA kernel of diffusionlm::draw: one block per row, each thread a strided slice of the vocabulary (coalesced
// loads), then one block reduction of the threads' DrawStates. Only CUDA headers and draw_state.h: nvcc can
// compile it without torch (build_kernels --check-cuda-source), and draw_cuda.cu adds the torch glue.
//
// Everything is float64, as the PyTorch path: the Gumbel noise needs float64 uniforms' tails, and the
// tokens must match the other paths bit for bit. Never build this with --use_fast_math (approximate log).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "draw_state.h"

namespace dlm {

constexpr int kDrawThreads = 256;

__device__ __forceinline__ double load_as_double(const float* p) { return *p; }
__device__ __forceinline__ double load_as_double(const double* p) { return *p; }
__device__ __forceinline__ double load_as_double(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ double load_as_double(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ DrawState shuffle_down(const DrawState& s, int offset) {
  DrawState o;
  o.best = __shfl_down_sync(0xffffffffu, s.best, offset);
  o.best_at = __shfl_down_sync(0xffffffffu, s.best_at, offset);
  o.best_logit = __shfl_down_sync(0xffffffffu, s.best_logit, offset);
  o.max = __shfl_down_sync(0xffffffffu, s.max, offset);
  o.sum = __shfl_down_sync(0xffffffffu, s.sum, offset);
  return o;
}

__device__ __forceinline__ DrawState warp_reduce(DrawState s) {
  for (int offset = 16; offset > 0; offset >>= 1) draw_merge(s, shuffle_down(s, offset));
  return s;
}

// The merged state of the whole block, valid in thread 0.
template <int kThreads>
__device__ DrawState block_reduce(DrawState s) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32 of them");
  __shared__ DrawState warps[kThreads / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  s = warp_reduce(s);
  if (lane == 0) warps[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kThreads / 32 ? warps[lane] : empty_draw_state();
    s = warp_reduce(s);
  }
  return s;
}

template <typename T, bool kGreedy, int kThreads>
__global__ void __launch_bounds__(kThreads)
    draw_kernel(const T* __restrict__ logits, const int64_t* __restrict__ key0, const int64_t* __restrict__ key1,
                int64_t* __restrict__ tokens, double* __restrict__ confidence, int64_t vocab, double temperature,
                int64_t forbid_a, int64_t forbid_b) {
  const int64_t row = blockIdx.x;
  const T* row_logits = logits + row * vocab;
  const auto k0 = static_cast<uint32_t>(key0[row]);  // keys hold values in [0, 2^32)
  const auto k1 = static_cast<uint32_t>(key1[row]);
  // Each thread sees its entries in increasing order, which draw_push's tie rule needs.
  DrawState s = empty_draw_state();
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const double logit = (v == forbid_a || v == forbid_b) ? kNegInf : load_as_double(row_logits + v);
    draw_push<kGreedy>(s, v, logit, temperature, k0, k1);
  }
  s = block_reduce<kThreads>(s);
  if (threadIdx.x == 0) {
    tokens[row] = s.best_at;
    confidence[row] = draw_confidence(s);
  }
}

// Launch on `stream` for `rows` rows of `vocab` contiguous logits; temperature 0 is greedy.
template <typename T>
cudaError_t launch_draw(const T* logits, const int64_t* key0, const int64_t* key1, int64_t* tokens,
                        double* confidence, int64_t rows, int64_t vocab, double temperature, int64_t forbid_a,
                        int64_t forbid_b, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(rows));
  if (temperature == 0.0) {
    draw_kernel<T, true, kDrawThreads><<<grid, kDrawThreads, 0, stream>>>(logits, key0, key1, tokens, confidence,
                                                                          vocab, temperature, forbid_a, forbid_b);
  } else {
    draw_kernel<T, false, kDrawThreads><<<grid, kDrawThreads, 0, stream>>>(logits, key0, key1, tokens, confidence,
                                                                           vocab, temperature, forbid_a, forbid_b);
  }
  return cudaGetLastError();
}

}  // namespace dlm
