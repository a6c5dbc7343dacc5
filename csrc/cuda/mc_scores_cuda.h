// What the CUDA translation units share: the scoring launchers (the fused top-k writes its keys through them).
// Included only by csrc/cuda/*.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../mc_scores_math.h"
#include "device.h"
#include "mc_scores_v2.cuh"

namespace entropy_al {

// Scores `logits` [K, N, C] (already checked; any strides) on the current CUDA stream; the caller holds a
// CUDAGuard for the logits' device. Results go to `out` (scores, keys, or keys beating a threshold appended to
// candidates; when the v1 kernels score, every key is appended); nothing happens when N == 0. The v2 kernels
// serve float32/float16/bfloat16 logits whose rows are contiguous and consecutive (a contiguous tensor or a
// slice of samples of one) with C <= 1024 (16-bit: C even), and float64 converted to float32 after its row
// shift; the v1 kernels serve everything else, and everything when ENTROPY_AL_SCORE_KERNEL=v1.
void mc_scores_cuda_launch(const at::Tensor& logits, Score score, const ScoreOutput& out);

// The v2 launcher for one input dtype (T = float, __half or __nv_bfloat16): returns false (and launches
// nothing) when v2 cannot serve these logits.
template <typename T>
bool mc_scores_v2_launch(const at::Tensor& logits, Score score, const ScoreOutput& out, cudaStream_t stream);

}  // namespace entropy_al
