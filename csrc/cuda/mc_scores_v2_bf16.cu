// The v2 score kernels for __nv_bfloat16 logits (one translation unit per dtype: they compile in parallel).
#include "mc_scores_v2_launch.cuh"

namespace entropy_al {
template bool mc_scores_v2_launch<__nv_bfloat16>(const at::Tensor&, Score, const ScoreOutput&, cudaStream_t);
}  // namespace entropy_al
