// CPU kernels that other CPU translation units call directly (the fused top-k scores its block in place).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace entropy_al {

at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score);

}  // namespace entropy_al
