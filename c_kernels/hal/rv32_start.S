/* Start-up of the bare-metal RV32 build: every hart of qemu's virt machine starts here (hal/rv32.ld
   puts this first, at the reset address). Hart 0 goes on to picolibc's crt0 (_start: its stack at
   __stack, .data, .bss, TLS, constructors, main); every other hart takes its own stack below hart 0's
   and waits in dpl_rv32_worker (hal/rv32.c) to be forked; a hart beyond __dpl_harts sleeps. All harts
   enable the machine software interrupt in mie (not globally), so that wfi returns when another hart
   rings their CLINT bell. */
  .section .text.dpl_rv32_start, "ax"
  .globl dpl_rv32_start
  .type dpl_rv32_start, @function
dpl_rv32_start:
  li t0, 8                      /* mie.MSIE */
  csrs mie, t0
  csrr a0, mhartid
  bnez a0, 1f
  j _start
1:
  lui t1, %hi(__dpl_harts)       /* a hart beyond the build's harts has no stack: it sleeps for good */
  addi t1, t1, %lo(__dpl_harts)
  bgeu a0, t1, 2f
  .option push
  .option norelax
  la gp, __global_pointer$
  .option pop
  la tp, __tls_base             /* the C library's thread-local data: hart 0's copy, shared */
  la sp, __stack
  lui t0, %hi(__dpl_stack_bytes)
  addi t0, t0, %lo(__dpl_stack_bytes)
  mul t0, t0, a0
  sub sp, sp, t0
#ifdef __riscv_flen
  li t0, 0x2000                 /* mstatus.FS = initial: the FPU is on */
  csrs mstatus, t0
  csrw fcsr, zero
#endif
  j dpl_rv32_worker
2:
  wfi
  j 2b
  .size dpl_rv32_start, . - dpl_rv32_start
