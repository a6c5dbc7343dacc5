// Stochastic acquisition: the perturbed top-k key score of a sample, shared by the CPU and CUDA kernels and mirrored
// bit for bit by entropy_al/reference.py. No ATen here.
//
// A top-k over keys beta * log s_i + G_i ("power") or beta * s_i + G_i ("softmax"), with G_i standard Gumbel noise,
// is a sample without replacement where each next pick has probability proportional to s_i^beta or
// exp(beta * s_i) (Gumbel-top-k). "top" keeps the score itself: today's selection, bit for bit.
//
// Noise. G_i = -log(-log u_i) with u_i = (2 m + 1) 2^-53 in (0, 1), m the 52 bits of two Philox4x32-10 words:
//   key     = (seed bits 0..31, seed bits 32..63 ^ kAcquisitionKeyTag)
//   counter = (i / 2 bits 0..31, i / 2 bits 32..63, kAcquisitionCounterTag0, kAcquisitionCounterTag1)
// words 0, 1 for even i and 2, 3 for odd i (m = (word_hi & 0xfffff) 2^32 + word_lo). Keyed dropout keys the
// same generator by the seed itself and counts sample ids in counter words 2, 3 (pool indices: high word 0), so
// the two streams never meet.
//
// Determinism. The noise and the key score are computed in float64 from IEEE +, -, *, / only, each rounded once
// (explicit round-to-nearest intrinsics on the GPU, where nvcc would otherwise fuse a * b + c into an FMA), and the
// log is this file's own (exponent split + atanh series), not libm's: CPU, GPU and the PyTorch fallback give the
// same bits. Host code calling these functions must be compiled without FP contraction (GCC contracts under
// -mfma): csrc/cpu/acquisition_cpu.cpp is, with a pragma.
#pragma once

#include <cstdint>
#include <cstring>

#include "keyed_dropout_math.h"
#include "mc_scores_math.h"

namespace entropy_al {

enum class Acquisition : int { kTop = 0, kPower = 1, kSoftmax = 2 };

constexpr uint32_t kAcquisitionKeyTag = 0x53544f43u;       // "STOC"
constexpr uint32_t kAcquisitionCounterTag0 = 0x61637175u;  // "acqu"
constexpr uint32_t kAcquisitionCounterTag1 = 0x69726521u;  // "ire!"

struct AcquisitionParams {
  Acquisition kind = Acquisition::kTop;
  double coldness = 1.0;  // beta, finite and > 0
  uint32_t key0 = 0;      // Philox key words (see the top of this file)
  uint32_t key1 = 0;
};

inline AcquisitionParams make_acquisition_params(Acquisition kind, double coldness, int64_t seed) {
  return {kind, coldness, low_word(seed), high_word(seed) ^ kAcquisitionKeyTag};
}

// float64 arithmetic rounded once per operation, never contracted into an FMA.
ENTROPY_AL_HOST_DEVICE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
ENTROPY_AL_HOST_DEVICE double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
ENTROPY_AL_HOST_DEVICE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
ENTROPY_AL_HOST_DEVICE double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// Exact conversions that --use_fast_math's flush-to-zero cannot touch (a subnormal score stays nonzero).
ENTROPY_AL_HOST_DEVICE double float_to_double(float x) {
#if defined(__CUDA_ARCH__)
  double y;
  asm("cvt.f64.f32 %0, %1;" : "=d"(y) : "f"(x));
  return y;
#else
  return static_cast<double>(x);
#endif
}
ENTROPY_AL_HOST_DEVICE float double_to_float(double x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("cvt.rn.f32.f64 %0, %1;" : "=f"(y) : "d"(x));
  return y;
#else
  return static_cast<float>(x);
#endif
}

constexpr uint64_t kSqrtHalfBits = 0x3fe6a09e667f3bcdull;  // float64 bits of sqrt(1/2)
constexpr uint64_t kMantissaMask = 0x000fffffffffffffull;
constexpr double kLn2Double = 0.6931471805599453;

// Natural log of a normal, finite float64 x > 0. x = m * 2^e with m in [sqrt(1/2), sqrt(2)); with
// t = (m - 1) / (m + 1), |t| < 0.1716, ln m = 2 atanh t = 2 t (1 + t^2 / 3 + t^4 / 5 + ... + t^12 / 13)
// (truncation error < 5e-13): far below the float32 rounding of the keys, and what matters is that every backend
// gets the same bits.
ENTROPY_AL_HOST_DEVICE double deterministic_log(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  // bits - kSqrtHalfBits puts the exponent's step at sqrt(1/2); the bias 0x3ff keeps the shift unsigned.
  const uint64_t shifted = bits - kSqrtHalfBits + (uint64_t{0x3ff} << 52);
  const int32_t exponent = static_cast<int32_t>(shifted >> 52) - 0x3ff;
  const uint64_t mantissa_bits = (shifted & kMantissaMask) + kSqrtHalfBits;
  double m;
  std::memcpy(&m, &mantissa_bits, sizeof(m));
  const double f = sub_rn(m, 1.0);  // exact
  const double t = div_rn(f, add_rn(f, 2.0));
  const double t2 = mul_rn(t, t);
  double p = 0.07692307692307693;                  // 1/13
  p = add_rn(mul_rn(p, t2), 0.09090909090909091);  // 1/11
  p = add_rn(mul_rn(p, t2), 0.1111111111111111);   // 1/9
  p = add_rn(mul_rn(p, t2), 0.14285714285714285);  // 1/7
  p = add_rn(mul_rn(p, t2), 0.2);                  // 1/5
  p = add_rn(mul_rn(p, t2), 0.3333333333333333);   // 1/3
  const double log_m = mul_rn(add_rn(t, mul_rn(mul_rn(t, t2), p)), 2.0);
  return add_rn(mul_rn(static_cast<double>(exponent), kLn2Double), log_m);
}

// The uniform u = (2 m + 1) 2^-53 in (0, 1) of a 52-bit m = (hi & 0xfffff) 2^32 + lo. Every step is exact.
ENTROPY_AL_HOST_DEVICE double open_uniform(uint32_t hi, uint32_t lo) {
  const double high = static_cast<double>(static_cast<int32_t>(hi & 0xfffffu)) * 8589934592.0;  // * 2^33
  const double low = static_cast<double>(lo) * 2.0 + 1.0;
  return (high + low) * 1.1102230246251565e-16;  // * 2^-53
}

// The Philox words of the pool indices 2 pair and 2 pair + 1 (words 0, 1 and 2, 3).
ENTROPY_AL_HOST_DEVICE PhiloxWords acquisition_words(uint64_t pair, uint32_t key0, uint32_t key1) {
  return philox4x32_10(static_cast<uint32_t>(pair), static_cast<uint32_t>(pair >> 32), kAcquisitionCounterTag0,
                       kAcquisitionCounterTag1, key0, key1);
}

// -log(-log u) of the uniform of two words.
ENTROPY_AL_HOST_DEVICE double gumbel_of_words(uint32_t hi, uint32_t lo) {
  return -deterministic_log(-deterministic_log(open_uniform(hi, lo)));
}

// The standard Gumbel noise G_i of pool index i under the key (key0, key1).
ENTROPY_AL_HOST_DEVICE double gumbel_noise(uint64_t index, uint32_t key0, uint32_t key1) {
  const PhiloxWords words = acquisition_words(index >> 1, key0, key1);
  const bool odd = (index & 1u) != 0;
  return gumbel_of_words(odd ? words.w[2] : words.w[0], odd ? words.w[3] : words.w[1]);
}

// The float32 score that ranks a sample of Gumbel noise `noise` under `params` (kind != kTop: callers keep "top"
// scores as they are). NaN stays NaN (ranked last). power: beta * log s + G; s <= 0 (0 and BALD's rounding
// negatives) is -inf, below every positive score; +inf stays +inf. softmax: beta * s + G.
ENTROPY_AL_HOST_DEVICE float perturb_with_noise(float score, double noise, const AcquisitionParams& params) {
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof(bits));
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  const double s = float_to_double(score);
  double key_score;
  if (params.kind == Acquisition::kPower) {
    const bool positive_finite = s > 0.0 && s < static_cast<double>(kInf);
    // The log's argument is 1 where it is not used, so that it stays in its domain.
    const double log_s = deterministic_log(positive_finite ? s : 1.0);
    key_score = positive_finite ? add_rn(mul_rn(params.coldness, log_s), noise) : (s > 0.0 ? s : -kInf);
  } else {
    key_score = add_rn(mul_rn(params.coldness, s), noise);
  }
  return nan ? score : double_to_float(key_score);
}

// The perturbed score of sample `index` (see perturb_with_noise).
ENTROPY_AL_HOST_DEVICE float perturbed_score(float score, uint64_t index, const AcquisitionParams& params) {
  return perturb_with_noise(score, gumbel_noise(index, params.key0, params.key1), params);
}

// The top-k key of sample `index` under `params`: encode_key of the score itself for kTop.
ENTROPY_AL_HOST_DEVICE int64_t acquisition_key(float score, int64_t index, const AcquisitionParams& params) {
  const float ranked = params.kind == Acquisition::kTop ? score : perturbed_score(score, index, params);
  return encode_key(ranked, index);
}

}  // namespace entropy_al
