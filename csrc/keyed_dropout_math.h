// Scalar math of keyed_dropout, shared by the CPU and CUDA kernels (and mirrored by the pure-PyTorch reference):
// the Philox4x32-10 counter-based generator and the keep/scale decision. No ATen here.
//
// Keying. The keep decision of element e (row-major position within one sample's [F] slice) of a sample is a pure
// function of (seed, sample_id, pass_id, e): one Philox4x32-10 call with
//   key     = (seed bits 0..31, seed bits 32..63)
//   counter = (e / 4, pass_id bits 0..31, sample_id bits 0..31, sample_id bits 32..63)
// gives the 32-bit words of the four consecutive elements 4 (e / 4) + j, j = 0..3. Element e is kept iff
// u = (word_j >> 8) * 2^-24 >= p, i.e. iff word_j >> 8 >= ceil(p * 2^24): an integer compare, exact for every p.
#pragma once

#include <cstdint>

#include "common.h"

namespace entropy_al {

// Philox4x32 multipliers and Weyl key increments (Salmon et al., SC'11; the constants of Random123 and curand).
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// Bits of each 32-bit word that form the uniform; p is resolved to 2^-24, like a float32 uniform in [0, 1).
constexpr int kUniformBits = 24;
constexpr uint32_t kUniformScale = 1u << kUniformBits;

struct PhiloxWords {
  uint32_t w[4];
};

// High and low 32 bits of a * b. Written as one 64-bit product so that GCC vectorizes it (vpmuludq).
ENTROPY_AL_HOST_DEVICE uint32_t mul_hi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Philox4x32-10 of one 128-bit counter under a 64-bit key.
ENTROPY_AL_HOST_DEVICE PhiloxWords philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                                 uint32_t k1) {
  ENTROPY_AL_UNROLL
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint32_t hi0 = mul_hi(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const uint32_t hi1 = mul_hi(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {{c0, c1, c2, c3}};
}

// ceil(p * 2^24) for p in [0, 1]: p = 0 keeps everything (threshold 0), p = 1 nothing (2^24 is above every
// 24-bit draw). p * 2^24 is exact in double, so this is the exact threshold of `uniform >= p`.
ENTROPY_AL_HOST_DEVICE uint32_t keep_threshold(double p) {
  const double scaled = p * static_cast<double>(kUniformScale);
  const uint32_t whole = static_cast<uint32_t>(scaled);
  return whole + (static_cast<double>(whole) < scaled ? 1u : 0u);
}

ENTROPY_AL_HOST_DEVICE bool keep_element(uint32_t word, uint32_t threshold) {
  return (word >> (32 - kUniformBits)) >= threshold;
}

// The factor of kept elements as nn.Dropout computes it: 1 / (1 - p) with both operands in the compute type
// (float for float32/float16/bfloat16, double for float64). Computed on the host only: nvcc's --use_fast_math
// would make a device division approximate.
template <typename opmath_t>
inline opmath_t keep_scale(double p) {
  return static_cast<opmath_t>(1) / static_cast<opmath_t>(1.0 - p);
}

// x * factor (factor = scale or 0, so NaN/inf inputs of dropped elements give NaN, as in nn.Dropout), rounded
// once. On the GPU an explicit mul.rn.f32: --use_fast_math's flush-to-zero would otherwise turn subnormal inputs
// and results into 0 where the CPU keeps them.
ENTROPY_AL_HOST_DEVICE float dropout_product(float x, float factor) {
#if defined(__CUDA_ARCH__)
  float product;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(product) : "f"(x), "f"(factor));
  return product;
#else
  return x * factor;
#endif
}
ENTROPY_AL_HOST_DEVICE double dropout_product(double x, double factor) { return x * factor; }

ENTROPY_AL_HOST_DEVICE uint32_t low_word(int64_t v) { return static_cast<uint32_t>(static_cast<uint64_t>(v)); }
ENTROPY_AL_HOST_DEVICE uint32_t high_word(int64_t v) {
  return static_cast<uint32_t>(static_cast<uint64_t>(v) >> 32);
}

}  // namespace entropy_al
