// CUDA kernel of diffusionlm::rms_norm: one block per row; each thread a strided slice of the row, a block sum
// of squares, then the scaled row. Only CUDA headers: nvcc can compile it without torch (build_kernels
// --check-cuda-source), and rms_norm_cuda.cu adds the torch glue. Same semantics as rms_norm_cpu.cpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dlm {

constexpr int kRmsNormThreads = 256;

// The accumulation type: float for 16- and 32-bit inputs, double for double.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T narrow(typename Acc<T>::type x) {
  return x;
}
template <>
__device__ __forceinline__ __half narrow<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// The sum of `v` over the block, returned to every thread.
template <int kThreads, typename A>
__device__ A block_sum(A v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32 of them");
  __shared__ A warps[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = v;
  __syncthreads();
  A total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += warps[w];  // the same order in every thread
  return total;
}

// T: x, residual, out, new_residual; W: weight (T or float). residual == nullptr: no residual.
template <typename T, typename W, int kThreads>
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(const T* __restrict__ x, const W* __restrict__ weight, const T* __restrict__ residual,
                    T* __restrict__ out, T* new_residual, int64_t width, typename Acc<T>::type eps) {
  using A = typename Acc<T>::type;
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * width;
  x += offset;
  out += offset;
  if (residual != nullptr) {
    residual += offset;
    new_residual += offset;
  }
  A sum_sq = 0;
  for (int64_t i = threadIdx.x; i < width; i += kThreads) {
    A h = widen(x[i]);
    if (residual != nullptr) {
      // rounded to T before it is normalised, as the model's unfused `x + branch` is
      const T rounded = narrow<T>(h + widen(residual[i]));
      new_residual[i] = rounded;
      h = widen(rounded);
    }
    sum_sq += h * h;
  }
  const A rstd = A(1) / sqrt(block_sum<kThreads>(sum_sq) / static_cast<A>(width) + eps);
  for (int64_t i = threadIdx.x; i < width; i += kThreads) {
    // new_residual[i] was written by this same thread above
    const A h = residual != nullptr ? widen(new_residual[i]) : widen(x[i]);
    out[i] = narrow<T>(h * rstd * widen(weight[i]));
  }
}

template <typename T, typename W>
cudaError_t launch_rms_norm(const T* x, const W* weight, const T* residual, T* out, T* new_residual, int64_t rows,
                            int64_t width, double eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  rms_norm_kernel<T, W, kRmsNormThreads><<<static_cast<unsigned>(rows), kRmsNormThreads, 0, stream>>>(
      x, weight, residual, out, new_residual, width, static_cast<typename Acc<T>::type>(eps));
  return cudaGetLastError();
}

}  // namespace dlm
