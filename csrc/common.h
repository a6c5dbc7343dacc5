// Definitions every translation unit shares, CPU and CUDA alike. No ATen here: the math headers that include
// this are compiled by nvcc for the device too.
#pragma once

// Functions of the shared math headers: host and device under nvcc, plain inline functions in the CPU build.
#if defined(__CUDACC__)
#define ENTROPY_AL_HOST_DEVICE __host__ __device__ __forceinline__
#define ENTROPY_AL_UNROLL _Pragma("unroll")
#else
#define ENTROPY_AL_HOST_DEVICE inline
#define ENTROPY_AL_UNROLL _Pragma("GCC unroll 16")
#endif
