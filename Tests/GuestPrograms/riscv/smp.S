/* Four harts (the tests run this one with -smp 4): each adds 1 to a shared word 20,000 times
   with amoadd.w and 20,000 times to another with an LR/SC loop, then checks in; hart 0 waits
   for all four and checks that no increment was lost. The harts run on host threads of
   their own, so this is atomicity across real concurrency. */
#include "test.h"
#define HARTS 4
#define ITERATIONS 20000
RVTEST_BEGIN
  csrr s0, mhartid
  la s1, amo_counter
  la s2, lrsc_counter
  li s3, ITERATIONS
1:li t0, 1
  amoadd.w zero, t0, (s1)
2:lr.w t1, (s2)
  addi t1, t1, 1
  sc.w t2, t1, (s2)
  bnez t2, 2b
  addi s3, s3, -1
  bnez s3, 1b
  la s4, finished
  li t0, 1
  amoadd.w.aqrl zero, t0, (s4)
  bnez s0, park
3:lw t1, 0(s4)
  li t0, HARTS
  bne t1, t0, 3b
  fence rw, rw
  lw a0, 0(s1)
  CHECK(1, a0, HARTS * ITERATIONS)
  lw a0, 0(s2)
  CHECK(2, a0, HARTS * ITERATIONS)
  RVTEST_PASS
park:
  wfi
  j park
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 64
amo_counter: .word 0
  .balign 64
lrsc_counter: .word 0
  .balign 64
finished: .word 0
