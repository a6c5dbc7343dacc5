// Device queries shared by the CUDA translation units (the runtime caches device attributes: no synchronization).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

namespace entropy_al {

// Streaming multiprocessors of the current device.
inline int multiprocessor_count() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace entropy_al
