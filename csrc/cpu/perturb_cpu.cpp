// The perturbed scores of stochastic acquisition over a range of samples (csrc/acquisition_math.h), compiled once
// per CPU capability (see cpu_kernels.h): the AVX2 build runs the Philox noise and the float64 logs four wide.
//
// The bits must be those of the GPU and the PyTorch fallback in both builds: no FMA contraction here (GCC fuses
// a * b + c under -mfma otherwise, and the AVX2 build has FMA). The pragma precedes every include so that all code
// here shares the option (GCC will not inline across differing options).
#pragma GCC optimize("fp-contract=off")

#include <cstdint>

#include "cpu_kernels.h"
#include "mc_scores_cpu.h"

ENTROPY_AL_CPU_KERNELS_BEGIN
namespace entropy_al::ENTROPY_AL_CPU_CAPABILITY {
namespace {

template <Acquisition kKind>
void perturb_range(const float* scores, int64_t begin, int64_t end, int64_t first_index, AcquisitionParams params,
                   float* out) {
  params.kind = kKind;  // a compile-time kind: the loop has no branch on it
  // One Philox call gives the noise of an aligned pair of pool indices: loop over whole pairs, the ends alone.
  const int64_t index_begin = first_index + begin, index_end = first_index + end;
  const int64_t pair_begin = (index_begin + 1) >> 1, pair_end = index_end >> 1;
  if (pair_begin >= pair_end) {
    for (int64_t i = begin; i < end; ++i) out[i] = perturbed_score(scores[i], first_index + i, params);
    return;
  }
  if (index_begin & 1) out[begin] = perturbed_score(scores[begin], index_begin, params);
  const float* pair_scores = scores + (2 * pair_begin - first_index);
  float* pair_out = out + (2 * pair_begin - first_index);
  const int64_t pairs = pair_end - pair_begin;
  for (int64_t j = 0; j < pairs; ++j) {
    const PhiloxWords words = acquisition_words(static_cast<uint64_t>(pair_begin + j), params.key0, params.key1);
    pair_out[2 * j] = perturb_with_noise(pair_scores[2 * j], gumbel_of_words(words.w[0], words.w[1]), params);
    pair_out[2 * j + 1] =
        perturb_with_noise(pair_scores[2 * j + 1], gumbel_of_words(words.w[2], words.w[3]), params);
  }
  if (index_end & 1) out[end - 1] = perturbed_score(scores[end - 1], index_end - 1, params);
}

}  // namespace

void perturb_scores_range(const float* scores, int64_t begin, int64_t end, int64_t first_index,
                          const AcquisitionParams& params, float* out) {
  if (params.kind == Acquisition::kPower) {
    perturb_range<Acquisition::kPower>(scores, begin, end, first_index, params, out);
  } else {
    perturb_range<Acquisition::kSoftmax>(scores, begin, end, first_index, params, out);
  }
}

}  // namespace entropy_al::ENTROPY_AL_CPU_CAPABILITY
ENTROPY_AL_CPU_KERNELS_END
