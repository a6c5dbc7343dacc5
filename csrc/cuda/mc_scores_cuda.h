// What the CUDA translation units share: the scoring launcher (the fused top-k writes its keys through it) and
// the device's multiprocessor count for grid sizing. Included only by csrc/cuda/*.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../acquisition_math.h"
#include "../mc_scores_math.h"

namespace entropy_al {

// Scores `logits` [K, N, C] (already checked; any strides) on the current CUDA stream; the caller holds a
// CUDAGuard for the logits' device. Writes either float32 scores to `scores` [N] or, when `keys` is not null,
// the top-k keys acquisition_key(score_n, first_index + n, acquisition) to `keys` [N]. Does nothing when N == 0.
void mc_scores_cuda_launch(const at::Tensor& logits, Score score, float* scores, int64_t* keys,
                           int64_t first_index, const AcquisitionParams& acquisition = {});

// Streaming multiprocessors of the current device (the runtime caches device attributes: no synchronization).
inline int multiprocessor_count() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace entropy_al
