// Scalar math of the MC-dropout scores and of the top-k keys, shared by the CPU and CUDA kernels.
// No ATen here: only what both compilers accept in host and device code, so that the CPU tests exercise
// exactly the arithmetic the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"

namespace entropy_al {

enum class Score : int { kEntropy = 0, kBald = 1, kMargin = 2, kLeastConfidence = 3 };

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kInf = __builtin_huge_valf();
// exp2 of anything below this is flushed to 0, like float32 softmax underflow; it also keeps e * t finite.
constexpr float kMinExp2Arg = -127.0f;

// The base-2 exponent t = (z - max) log2(e) of a logit in its row. Subtracting before scaling keeps the gap of
// near-tied logits of large magnitude exact.
ENTROPY_AL_HOST_DEVICE float exp2_exponent(float z, float row_max) { return (z - row_max) * kLog2e; }

// The same exponent as one FMA, z log2(e) - c with c = max log2(e) rounded once: z log2(e) is not rounded
// inside the FMA, and the rounding error of c (at most half an ulp of c) shifts every exponent of the row alike,
// which the softmax (and the entropy from S and T below) does not see. Rows with |max| > kMaxFmaLogit need the
// two-op form: there c's rounding error could exceed 1/2 (and, for huge logits, overflow 2^t).
constexpr float kMaxFmaLogit = 1.0e7f;
ENTROPY_AL_HOST_DEVICE float scaled_row_max(float row_max) { return row_max * kLog2e; }
ENTROPY_AL_HOST_DEVICE float exp2_exponent_fma(float z, float scaled_max) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(z, kLog2e, -scaled_max);
#else
  return std::fma(z, kLog2e, -scaled_max);
#endif
}

// t clamped at kMinExp2Arg: a -inf logit then gives e = 0 and e * t = 0 instead of NaN. On the GPU a NaN stays
// NaN (max.NaN), so that a bad logit reaches the row sums and is detected there; the CPU detects bad logits on
// its own and maps NaN into range, so that its polynomial exp2 never converts NaN to an integer.
ENTROPY_AL_HOST_DEVICE float clamp_exp2_arg(float t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  float clamped;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(clamped) : "f"(t), "f"(kMinExp2Arg));
  return clamped;
#elif defined(__CUDA_ARCH__)
  return t != t ? t : fmaxf(t, kMinExp2Arg);
#else
  return t >= kMinExp2Arg ? t : kMinExp2Arg;
#endif
}

// 2^x for kMinExp2Arg <= x <= 0 (callers clamp, which also maps NaN into range), flushed to 0 below about
// -126.5 like float32 softmax underflow. The GPU uses the MUFU ex2 unit; the CPU a degree-5 minimax polynomial
// on [-0.5, 0.5] (relative error 7.5e-8, 2.4e-7 after float32 rounding), without branches so that it vectorizes.
ENTROPY_AL_HOST_DEVICE float fast_exp2(float x) {
#if defined(__CUDA_ARCH__)
  return exp2f(x);
#else
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float n = (x + magic) - magic;
  const float f = x - n;
  float p = 1.327645852e-03f;
  p = p * f + 9.675539621e-03f;
  p = p * f + 5.550713294e-02f;
  p = p * f + 2.402211976e-01f;
  p = p * f + 6.931469671e-01f;
  p = p * f + 1.000000072e+00f;
  // n = -127 gives exponent bits 0, i.e. scale = 0: the flush to zero needs no branch.
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
#endif
}

// Natural log of x > 0 (normal floats). The GPU uses MUFU lg2; the CPU splits x = m * 2^e with m in
// [sqrt(1/2), sqrt(2)) and sums the atanh series of t = (m - 1) / (m + 1) (|t| < 0.172, error < 1e-9).
ENTROPY_AL_HOST_DEVICE float fast_log(float x) {
#if defined(__CUDA_ARCH__)
  return __log2f(x) * kLn2;
#else
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  // Subtracting the bits of sqrt(1/2) puts the split point of the mantissa at sqrt(1/2) instead of 1.
  const int32_t shifted = bits - 0x3f3504f3;
  const int32_t exponent = shifted >> 23;
  const int32_t mantissa_bits = (shifted & 0x007fffff) + 0x3f3504f3;
  float m;
  std::memcpy(&m, &mantissa_bits, sizeof(m));
  const float t = (m - 1.0f) / (m + 1.0f);
  const float t2 = t * t;
  float s = 1.0f / 11.0f;
  s = s * t2 + 1.0f / 9.0f;
  s = s * t2 + 1.0f / 7.0f;
  s = s * t2 + 1.0f / 5.0f;
  s = s * t2 + 1.0f / 3.0f;
  s = s * t2 + 1.0f;
  return static_cast<float>(exponent) * kLn2 + 2.0f * t * s;
#endif
}

ENTROPY_AL_HOST_DEVICE float quiet_nan() {
#if defined(__CUDA_ARCH__)
  return __int_as_float(0x7fffffff);
#else
  return __builtin_nanf("");
#endif
}

// True for NaN and +inf: a logit that means the model is broken (-inf is a valid probability 0).
ENTROPY_AL_HOST_DEVICE bool is_bad_logit(float z) { return !(z < kInf); }

// -p ln p with 0 ln 0 = 0.
ENTROPY_AL_HOST_DEVICE float neg_p_log_p(float p) { return p > 0.0f ? -p * fast_log(p) : 0.0f; }

// Entropy (nats) of one softmax row from its base-2 sums over the classes: S = sum e_c and
// T = sum e_c t_c with t_c = (z_c - max) log2(e) and e_c = 2^t_c. H = ln2 (log2 S - T / S), no per-element log.
// log2 of x > 0 (normal floats): MUFU lg2 on the GPU.
ENTROPY_AL_HOST_DEVICE float fast_log2(float x) {
#if defined(__CUDA_ARCH__)
  return __log2f(x);
#else
  return fast_log(x) * kLog2e;
#endif
}

// The same entropy in bits, log2 S - T / S (a kernel can sum these over rows and scale by ln 2 once).
ENTROPY_AL_HOST_DEVICE float row_entropy_bits(float sum_e, float sum_e_t, float inv_sum_e) {
  return fast_log2(sum_e) - sum_e_t * inv_sum_e;
}
ENTROPY_AL_HOST_DEVICE float row_entropy(float sum_e, float sum_e_t, float inv_sum_e) {
  return kLn2 * row_entropy_bits(sum_e, sum_e_t, inv_sum_e);
}
ENTROPY_AL_HOST_DEVICE float row_entropy(float sum_e, float sum_e_t) {
  return row_entropy(sum_e, sum_e_t, 1.0f / sum_e);
}

// Running statistics of the mean probabilities p̄ of one sample, fed class by class.
struct MeanProbStats {
  float entropy = 0.0f;  // -sum p̄ ln p̄
  float top1 = -1.0f;    // largest p̄
  float top2 = -1.0f;    // second largest p̄ (stays -1 when C == 1)

  ENTROPY_AL_HOST_DEVICE void add(float p) {
    entropy += neg_p_log_p(p);
    add_to_top_two(p);
  }

  // Without branches (selects only): the larger of (p, top1) is the new top1, the smaller competes for top2.
  ENTROPY_AL_HOST_DEVICE void add_to_top_two(float p) {
    const float smaller = p > top1 ? top1 : p;
    top1 = p > top1 ? p : top1;
    top2 = smaller > top2 ? smaller : top2;
  }

  // Folds in the statistics of another share of the classes (for parallel reductions).
  ENTROPY_AL_HOST_DEVICE void merge(const MeanProbStats& o) {
    entropy += o.entropy;
    const float hi = top1 > o.top1 ? top1 : o.top1;
    const float lo = top1 > o.top1 ? o.top1 : top1;
    const float second = top2 > o.top2 ? top2 : o.top2;
    top1 = hi;
    top2 = lo > second ? lo : second;
  }
};

// The score of a sample (higher = more uncertain), from the stats of p̄ and mean_k H(p_k).
ENTROPY_AL_HOST_DEVICE float finalize_score(Score score, const MeanProbStats& stats, float mean_row_entropy,
                                            bool bad) {
  if (bad) return quiet_nan();
  switch (score) {
    case Score::kEntropy:
      return stats.entropy;
    case Score::kBald:
      return stats.entropy - mean_row_entropy;
    case Score::kMargin:
      return stats.top2 - stats.top1;
    default:  // kLeastConfidence
      return -stats.top1;
  }
}

// ---- Top-k keys ------------------------------------------------------------------------------------------
// A (score, pool index) pair as one int64 whose descending order is the selection order: the high 32 bits are
// the score's order-preserving bits (NaN lowest, -0 == +0), the low 32 bits the inverted index (ties to the
// lower index). Keys are unique, so every backend's top-k of them is the same.

ENTROPY_AL_HOST_DEVICE int64_t encode_key(float score, int64_t index) {
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof(bits));
  // -0.0 -> +0.0, tested on the bits: a float compare would also zero subnormals under nvcc's -ftz.
  if ((bits & 0x7fffffffu) == 0u) bits = 0u;
  uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  if (score != score) ordered = 0u;
  const int64_t high = static_cast<int64_t>(ordered) - (int64_t{1} << 31);
  return high * (int64_t{1} << 32) + (int64_t{0xffffffff} - index);
}

// True when a key can enter a top-k whose current k-th best key is `threshold` (keys are unique, so equality
// means the same sample). INT64_MIN stands for "not full yet": every key is a candidate.
ENTROPY_AL_HOST_DEVICE bool beats_threshold(int64_t key, int64_t threshold) { return key > threshold; }

}  // namespace entropy_al
