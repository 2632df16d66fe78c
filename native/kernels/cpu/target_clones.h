// CRPO_AVX2_CLONE marks a hot loop for function multi-versioning: an AVX2 clone is chosen at load
// time where the CPU has it (8-wide float ops); the default clone is plain SSE2. Only GCC on x86-64
// has target_clones; elsewhere the macro is empty.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CRPO_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define CRPO_AVX2_CLONE
#endif
