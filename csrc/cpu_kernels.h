// The CPU kernels on raw pointers, without torch's tensor or operator headers: draw_cpu.cpp and rms_norm_cpu.cpp
// define them and instantiate them for float, double, c10::Half and c10::BFloat16 (each file compiles in
// seconds); ops.cpp is the one translation unit that pays for torch's headers and turns tensors into these
// calls.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace dlm {

// Rows of `vocab` contiguous logits, their keys and outputs (see draw_state.h); temperature 0 is greedy.
struct DrawRows {
  const int64_t* key0;
  const int64_t* key1;
  int64_t* tokens;
  double* confidence;
  int64_t rows;
  int64_t vocab;
  double temperature;
  int64_t forbid_a;
  int64_t forbid_b;
};

template <typename T>
void draw_cpu(const T* logits, const DrawRows& rows);

// out[r, v] = the uniform of vocabulary index v under row r's keys, [rows, width] contiguous.
void uniforms_cpu(const int64_t* key0, const int64_t* key1, double* out, int64_t rows, int64_t width);

// T: x, residual, out, new_residual (contiguous [rows, width]); W: weight (T or float). residual == nullptr: none.
template <typename T, typename W>
void rms_norm_cpu(const T* x, const W* weight, const T* residual, T* out, T* new_residual, int64_t rows,
                  int64_t width, double eps);

}  // namespace dlm
