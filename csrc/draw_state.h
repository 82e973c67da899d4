// One row's draw as a running state: the Gumbel-max (or plain argmax) winner and the online logsumexp of the
// row's logits, updated one vocabulary entry at a time and merged across threads. The CPU loop and the CUDA
// block reduction run this same code, so the two devices agree on every token.
//
// The arithmetic mirrors diffusionlm/inference/categorical.py in float64: score = -log(-log(u)) + logit / T
// (a division, as the reference rounds it), argmax with ties to the lowest index, and the confidence
// softmax(logits)[token] of the untempered logits, where forbidden ids are -inf (they are never drawn and
// carry no probability).
#pragma once

#include <cmath>
#include <cstdint>

#include "uniforms.h"

namespace dlm {

constexpr double kNegInf = -static_cast<double>(INFINITY);

// Above the largest Gumbel noise a uniform can give: u <= 1 - 2^-53 makes -log(-log(u)) <= 36.74. An entry
// whose logit / T + kGumbelMax cannot beat the running best cannot win, so its hashes and logs are skipped.
// The skip is exact (rounding is monotone, and a score equal to the best never replaces it) and saves most of
// the float64 work on peaked rows, which matters where float64 is slow (the Orin's GPU).
constexpr double kGumbelMax = 37.0;

struct DrawState {
  double best;        // the best score so far; -inf: nothing beat -inf yet
  int64_t best_at;    // its vocabulary index (0 while nothing won: argmax of an all -inf row is 0)
  double best_logit;  // its untempered logit, for the confidence
  double max;         // online logsumexp of the logits: running maximum...
  double sum;         // ...and the sum of exp(logit - max)
};

DLM_HOST_DEVICE DrawState empty_draw_state() { return DrawState{kNegInf, 0, kNegInf, kNegInf, 0.0}; }

// Entry v of a row, in increasing v within one state (so a strict > keeps the lowest index on ties). `logit` is
// already -inf for a forbidden id. kGreedy: the score is the logit itself, and the uniforms are never made.
template <bool kGreedy>
DLM_HOST_DEVICE void draw_push(DrawState& s, int64_t v, double logit, double temperature, uint32_t key0,
                               uint32_t key1) {
  if (logit > s.max) {
    s.sum = s.sum * ::exp(s.max - logit) + 1.0;
    s.max = logit;
  } else if (logit > kNegInf) {  // -inf adds nothing (and -inf - -inf would be NaN)
    s.sum += ::exp(logit - s.max);
  }
  double score;
  if constexpr (kGreedy) {
    score = logit;
  } else {
    const double scaled = logit / temperature;
    if (!(scaled + kGumbelMax > s.best)) return;  // cannot win (see kGumbelMax); also -inf and NaN logits
    const double u = vocab_uniform(key0, key1, static_cast<uint32_t>(v));
    score = -::log(-::log(u)) + scaled;
  }
  if (score > s.best) {
    s.best = score;
    s.best_at = v;
    s.best_logit = logit;
  }
}

// Fold `b` (entries from anywhere in the row) into `a`: the higher score wins, the lower index on a tie.
DLM_HOST_DEVICE void draw_merge(DrawState& a, const DrawState& b) {
  if (b.best > a.best || (b.best == a.best && b.best_at < a.best_at)) {
    a.best = b.best;
    a.best_at = b.best_at;
    a.best_logit = b.best_logit;
  }
  const double m = b.max > a.max ? b.max : a.max;
  if (m > kNegInf) {
    a.sum = a.sum * ::exp(a.max - m) + b.sum * ::exp(b.max - m);
    a.max = m;
  }
}

// softmax(logits)[token] from the finished state (NaN for a row with no finite logit, as torch's softmax).
DLM_HOST_DEVICE double draw_confidence(const DrawState& s) { return ::exp(s.best_logit - s.max) / s.sum; }

}  // namespace dlm
