/* A program for the GDB stub tests (Tests/MachinesTests/GDBTests.swift): it calls
   `checkpoint` three times, storing the iteration count in `counter` each time, and exits
   with the value of `answer` (0 unless a debugger changed it). Run alone it passes.
   Before the loop it turns the FPU on and leaves known values for the debugger to read:
   fa0 = pi (0x400921fb54442d18) and fcsr = 0x65 (frm 3 = RUP, fflags OF|NX). */
#include "test.h"
RVTEST_BEGIN
  li t0, 1 << 13
  csrs mstatus, t0           /* FS = Initial */
  li t0, 0x400921fb54442d18
  fmv.d.x fa0, t0
  li t0, 0x65
  csrw fcsr, t0
  la s1, counter
  li s2, 0
loop:
  call checkpoint
  addi s2, s2, 1
  sd s2, 0(s1)
  li t0, 3
  blt s2, t0, loop
  CHECK(1, s2, 3)
  la t0, answer
  ld gp, 0(t0)
  bnez gp, fail
  RVTEST_PASS

  .globl checkpoint
  .type checkpoint, @function
checkpoint:
  la t0, scratch
  ld t1, 0(t0)
  addi t1, t1, 1
  sd t1, 0(t0)
  ret
  .size checkpoint, .-checkpoint

RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 8
  .globl counter, answer, scratch
counter: .dword 0
answer: .dword 0
scratch: .dword 0
