// The AVX2 + FMA build of ../perturb_cpu.cpp (see ../cpu_kernels.h).
#define ENTROPY_AL_CPU_AVX2 1
#include "../perturb_cpu.cpp"
