// The v2 score kernels for float logits (one translation unit per dtype: they compile in parallel).
#include "mc_scores_v2_launch.cuh"

namespace entropy_al {
template bool mc_scores_v2_launch<float>(const at::Tensor&, Score, const ScoreOutput&, cudaStream_t);
}  // namespace entropy_al
