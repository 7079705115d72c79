/*
 * fuzz.h: what every libFuzzer target in tests/fuzz shares. Each target is one .c file
 * defining LLVMFuzzerTestOneInput (and optionally LLVMFuzzerInitialize); libFuzzer's
 * main (-fsanitize=fuzzer) calls them. Built only with ./configure --enable-fuzzing.
 */
#ifndef DR_FUZZ_H
#define DR_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry points (prototypes for -Wmissing-prototypes). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
