// The AVX2 + FMA build of ../keyed_dropout_cpu.cpp (see ../cpu_kernels.h).
#define ENTROPY_AL_CPU_AVX2 1
#include "../keyed_dropout_cpu.cpp"
