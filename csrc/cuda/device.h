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

// Shared memory one block of the current device may use when its kernel opts in (99 KiB on sm_86/89, 163 KiB
// on sm_80, 227 KiB on sm_90).
inline int max_shared_memory_per_block() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return bytes;
}

}  // namespace entropy_al
