/*
 * The hand-written baseline's driver: runs the prompt one token at a time, then greedy decode, each
 * decode step fed the previous token at the next position. Prints "Token i: id" per generated token and
 * "Errors: E out of N" against the expected tokens (model.h, generated with the weights in model.c).
 * Built with DPL_PROFILE for RV32 (hal/rv32.c), it prints the instructions of every call like a generator
 * project's driver ("Profile prompt: ...", "Profile decode i: ..."): the prompt's line sums its tokens.
 */
#include <stdint.h>
#include <stdio.h>

#include "llama.h"
#include "model.h"
#ifdef DPL_PROFILE
#include "dpl_profile.h"
#endif

/* One forward pass, counted as profiling step 1 (one hart, no DMA). */
static const float *forward(int32_t token, int32_t pos) {
  const float *logits;
#ifdef DPL_PROFILE
  dpl_profile_step_begin(1);
#endif
  logits = hw_forward(&hw_model_config, &hw_model_weights, &hw_model_buffers, token, pos);
#ifdef DPL_PROFILE
  dpl_profile_step_end(1);
#endif
  return logits;
}

/* The instructions of hart 0 in step 1 so far (0 without profiling). */
static uint64_t counted(void) {
#ifdef DPL_PROFILE
  return dpl_profile_instructions(1, 0);
#else
  return 0;
#endif
}

static void print_call(const char *name, long call, uint64_t instructions) {
#ifdef DPL_PROFILE
  if (call < 0) {
    printf("Profile %s: dma_to_l1 0 dma_to_l2 0 instructions %llu\n", name, (unsigned long long)instructions);
  } else {
    printf("Profile %s %ld: dma_to_l1 0 dma_to_l2 0 instructions %llu\n", name, call,
           (unsigned long long)instructions);
  }
#else
  (void)name;
  (void)call;
  (void)instructions;
#endif
}

int main(void) {
  const float *logits = 0;
  long i, errors = 0;
  int32_t token;
  uint64_t start = counted();
  for (i = 0; i < HW_PROMPT_TOKENS; ++i) logits = forward(hw_prompt_tokens[i], (int32_t)i);
  print_call("prompt", -1, counted() - start);
  token = hw_argmax(logits, hw_model_config.vocab_size);
  for (i = 0;;) {
    printf("Token %ld: %ld\n", i, (long)token);
    errors += token != hw_expected_tokens[i];
    if (++i == HW_GENERATED_TOKENS) break;
    start = counted();
    logits = forward(token, (int32_t)(HW_PROMPT_TOKENS + i - 1));
    print_call("decode", i, counted() - start);
    token = hw_argmax(logits, hw_model_config.vocab_size);
  }
  printf("Errors: %ld out of %d\n", errors, HW_GENERATED_TOKENS);
  return errors > 0 ? 1 : 0;
}
