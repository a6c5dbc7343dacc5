// CPU side of stochastic acquisition: the perturbed scores of a block (csrc/acquisition_math.h) and the private
// test op that exposes the float64 Gumbel noise.
//
// The noise must be the bits the GPU and the PyTorch fallback compute: no FMA contraction in this file (GCC fuses
// a * b + c under -mfma otherwise). The pragma precedes every include so that all code here shares the option
// (GCC will not inline across differing options).
#pragma GCC optimize("fp-contract=off")

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../mc_scores.h"
#include "mc_scores_cpu.h"

namespace entropy_al {

// Elements below which a task is not split further (the noise costs a few tens of ns per element).
constexpr int64_t kPerturbGrain = 1 << 12;

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

void perturb_scores_range(const float* scores, int64_t begin, int64_t end, int64_t first_index,
                          const AcquisitionParams& params, float* out) {
  TORCH_INTERNAL_ASSERT(params.kind != Acquisition::kTop, "perturb_scores_range: 'top' scores are not perturbed");
  if (params.kind == Acquisition::kPower) {
    perturb_range<Acquisition::kPower>(scores, begin, end, first_index, params, out);
  } else {
    perturb_range<Acquisition::kSoftmax>(scores, begin, end, first_index, params, out);
  }
}

void perturb_scores_cpu(const float* scores, int64_t count, int64_t first_index, const AcquisitionParams& params,
                        float* out) {
  at::parallel_for(0, count, kPerturbGrain, [&](int64_t begin, int64_t end) {
    perturb_scores_range(scores, begin, end, first_index, params, out);
  });
}

namespace {

// float64 G_i of int64 pool indices i >= 0 under `seed`, as the kernels compute it (for the tests).
at::Tensor acquisition_noise_cpu(const at::Tensor& indices, int64_t seed) {
  TORCH_CHECK_TYPE(indices.dim() == 1 && indices.scalar_type() == at::kLong,
                   "_acquisition_noise: expected `indices` to be a 1-D int64 tensor, got ",
                   dtype_name(indices.scalar_type()), " tensor of shape ", indices.sizes());
  const at::Tensor index = indices.contiguous();
  at::Tensor out = at::empty({index.numel()}, index.options().dtype(at::kDouble));
  const AcquisitionParams params = make_acquisition_params(Acquisition::kSoftmax, 1.0, seed);
  const int64_t* in = index.const_data_ptr<int64_t>();
  double* noise = out.mutable_data_ptr<double>();
  for (int64_t i = 0; i < index.numel(); ++i) {
    TORCH_CHECK_VALUE(in[i] >= 0, "_acquisition_noise: expected `indices` >= 0, got ", in[i]);
    noise[i] = gumbel_noise(static_cast<uint64_t>(in[i]), params.key0, params.key1);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(entropy_al, CPU, m) { m.impl("_acquisition_noise", &acquisition_noise_cpu); }

}  // namespace entropy_al
