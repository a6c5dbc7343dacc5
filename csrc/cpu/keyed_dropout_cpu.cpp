// CPU kernel of keyed_dropout. x is viewed as [B, F] (contiguous); tasks (at::parallel_for) take chunks of
// kChunk elements of one row. Per chunk, one loop runs the Philox calls of its element groups side by side (GCC
// vectorizes it over groups: 8 calls per AVX2 vector, vpmuludq for the 32x32->64 products) and writes each
// element's factor (scale or 0) in element order; a second loop multiplies x by the factors.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "../keyed_dropout.h"
#include "cpu_kernels.h"

ENTROPY_AL_CPU_KERNELS_BEGIN
namespace entropy_al::ENTROPY_AL_CPU_CAPABILITY {
namespace {

// Elements per chunk: a multiple of 4 (one Philox call) times the 8 calls of a vector. 8 KiB of float factors
// stay in L1 between the two loops.
constexpr int64_t kChunk = 2048;
// Chunks below which a task is not split further (about 32k elements).
constexpr int64_t kGrainChunks = 16;

struct KeyedParams {
  uint32_t key0, key1;  // the seed's words
  uint32_t threshold;   // keep iff (word >> 8) >= threshold
  bool random;          // false when p is 0 or 1: every factor is the same and no draw is needed
};

// factor[4 l + j] = scale or 0 for the elements of the groups first_group + l, l < groups.
template <typename opmath_t>
void keep_factors(uint32_t first_group, int64_t groups, uint32_t pass, uint32_t sample_lo, uint32_t sample_hi,
                  const KeyedParams& params, opmath_t scale, opmath_t* factor) {
  const uint32_t key0 = params.key0, key1 = params.key1, threshold = params.threshold;
#pragma omp simd
  for (int64_t l = 0; l < groups; ++l) {
    const PhiloxWords words =
        philox4x32_10(first_group + static_cast<uint32_t>(l), pass, sample_lo, sample_hi, key0, key1);
    factor[4 * l + 0] = keep_element(words.w[0], threshold) ? scale : opmath_t(0);
    factor[4 * l + 1] = keep_element(words.w[1], threshold) ? scale : opmath_t(0);
    factor[4 * l + 2] = keep_element(words.w[2], threshold) ? scale : opmath_t(0);
    factor[4 * l + 3] = keep_element(words.w[3], threshold) ? scale : opmath_t(0);
  }
}

// float <-> IEEE half on the bits: the FP16 library's branch-free algorithms, which c10 uses without F16C.
// Exact, round to nearest even.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal halves: shift exponent and mantissa into place, rebias by 2^-112 (exact).
  const float normalized = std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * std::bit_cast<float>(0x7800000u);
  // Subnormal halves: the mantissa under a magic exponent minus 0.5.
  const float denormalized = std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = two_w < (1u << 27) ? std::bit_cast<uint32_t>(denormalized)
                                                : std::bit_cast<uint32_t>(normalized);
  return std::bit_cast<float>(sign | magnitude);
}

inline uint16_t float_to_half_bits(float f) {
  float base = (std::fabs(f) * std::bit_cast<float>(239u << 23)) * std::bit_cast<float>(17u << 23);
  const uint32_t w = std::bit_cast<uint32_t>(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = std::bit_cast<uint32_t>(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

template <typename scalar_t, typename opmath_t>
inline void multiply_chunk(const scalar_t* src, const opmath_t* factor, int64_t count, scalar_t* dst) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    dst[i] = static_cast<scalar_t>(dropout_product(static_cast<opmath_t>(src[i]), factor[i]));
  }
}

// bfloat16 <-> float as c10::BFloat16 converts (NaN -> 0x7FC0, else round to nearest even), on the bits.
inline float bfloat16_bits_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (bits + ((bits >> 16) & 1u) + 0x7FFFu) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

// The 16-bit types through their bits: c10::Half and c10::BFloat16 conversions do not vectorize.
template <float (*to_float)(uint16_t), uint16_t (*from_float)(float)>
inline void multiply_chunk_16(const void* src, const float* factor, int64_t count, void* dst) {
  const auto* in = static_cast<const uint16_t*>(src);
  auto* out = static_cast<uint16_t*>(dst);
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) out[i] = from_float(dropout_product(to_float(in[i]), factor[i]));
}

inline void multiply_chunk(const c10::Half* src, const float* factor, int64_t count, c10::Half* dst) {
  multiply_chunk_16<half_bits_to_float, float_to_half_bits>(src, factor, count, dst);
}

inline void multiply_chunk(const c10::BFloat16* src, const float* factor, int64_t count, c10::BFloat16* dst) {
  multiply_chunk_16<bfloat16_bits_to_float, float_to_bfloat16_bits>(src, factor, count, dst);
}

template <typename scalar_t>
void keyed_dropout_kernel(const scalar_t* x,  // [B, F] contiguous
                          int64_t B, int64_t F, const int64_t* sample_ids, const int64_t* pass_ids,  // [B]
                          const KeyedParams& params, at::opmath_type<scalar_t> scale,
                          scalar_t* out) {  // [B, F] contiguous
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t chunks_per_row = (F + kChunk - 1) / kChunk;
  // p = 1: every factor is 0 (x * 0, so NaN stays NaN as in nn.Dropout); p = 0 never gets here (a copy).
  const opmath_t constant_factor = params.threshold == 0 ? scale : opmath_t(0);
  at::parallel_for(0, B * chunks_per_row, kGrainChunks, [&](int64_t begin, int64_t end) {
    alignas(64) opmath_t factor[kChunk];
    if (!params.random) std::fill(factor, factor + kChunk, constant_factor);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks_per_row;
      const int64_t first = (task % chunks_per_row) * kChunk;
      const int64_t count = std::min(kChunk, F - first);
      if (params.random) {
        // Whole groups (the last may run past F: those factors are not read).
        keep_factors<opmath_t>(static_cast<uint32_t>(first / 4), (count + 3) / 4, low_word(pass_ids[row]),
                               low_word(sample_ids[row]), high_word(sample_ids[row]), params, scale, factor);
      }
      multiply_chunk(x + row * F + first, factor, count, out + row * F + first);
    }
  });
}

}  // namespace

at::Tensor keyed_dropout_cpu(const at::Tensor& x, double p, int64_t seed, const at::Tensor& sample_ids,
                             const at::Tensor& pass_ids) {
  const int64_t F = check_keyed_dropout(x, p, sample_ids, pass_ids);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu(), "keyed_dropout_cpu: the dispatcher sent x on ", x.device());
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  if (p == 0.0) return out.copy_(input);
  const at::Tensor samples = sample_ids.contiguous(), passes = pass_ids.contiguous();
  const uint32_t threshold = keep_threshold(p);
  const KeyedParams params{low_word(seed), high_word(seed), threshold, threshold > 0 && threshold < kUniformScale};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "keyed_dropout_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    keyed_dropout_kernel<scalar_t>(input.const_data_ptr<scalar_t>(), x.size(0), F,
                                   samples.const_data_ptr<int64_t>(), passes.const_data_ptr<int64_t>(), params,
                                   keep_scale<opmath_t>(p), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace entropy_al::ENTROPY_AL_CPU_CAPABILITY
ENTROPY_AL_CPU_KERNELS_END
