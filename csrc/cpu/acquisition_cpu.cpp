// CPU side of stochastic acquisition: the perturbed scores of a block over at::parallel_for (each range by the
// kernels of perturb_cpu.cpp) and the private test op that exposes the float64 Gumbel noise.
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

// Elements below which a task is not split further (the noise costs a few ns per element).
constexpr int64_t kPerturbGrain = 1 << 12;

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
