// The AVX2 + FMA build of ../mc_scores_cpu.cpp (see ../cpu_kernels.h).
#define ENTROPY_AL_CPU_AVX2 1
#include "../mc_scores_cpu.cpp"
