// The counter-based uniforms of diffusionlm/inference/streams.py, for the CPU and CUDA kernels alike.
//
// A row's token-stream keys (key0, key1) and a vocabulary index v give two lowbias32 words, one per key, and the
// uniform takes 26 bits of each: k = (w0 >> 6) << 26 | (w1 >> 6), u = (k + 1/2) * 2^-52, in (0, 1). This is
// RowStreams.from_bases operation for operation (and triton_draw.py's kernel), so every path draws the same
// tokens. Plain C++: no torch and no CUDA headers, so nvcc and the host compiler both see the same arithmetic.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DLM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DLM_HOST_DEVICE inline
#endif

namespace dlm {

// streams.py's _VOCAB_SALT: one salt per 32-bit word of a uniform.
constexpr uint32_t kVocabSalt0 = 0x9E3779B9u;
constexpr uint32_t kVocabSalt1 = 0x85EBCA6Bu;

// Chris Wellons' lowbias32: a bijection of the 32-bit integers with strong avalanche (streams.py's _hash32_).
DLM_HOST_DEVICE uint32_t lowbias32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

// The float64 uniform of vocabulary index v under a row's keys. Exact: k < 2^52, so k + 0.5 and the scaling by
// a power of two lose no bits, whatever the platform.
DLM_HOST_DEVICE double vocab_uniform(uint32_t key0, uint32_t key1, uint32_t v) {
  const uint32_t w0 = lowbias32(key0 ^ lowbias32(v ^ kVocabSalt0));
  const uint32_t w1 = lowbias32(key1 ^ lowbias32(v ^ kVocabSalt1));
  const uint64_t k = (static_cast<uint64_t>(w0 >> 6) << 26) | static_cast<uint64_t>(w1 >> 6);
  return (static_cast<double>(k) + 0.5) * 0x1p-52;
}

}  // namespace dlm
