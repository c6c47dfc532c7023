/* -smp 64 (ClaimsTests): every hart sets its bit in a shared 64-bit word with amoor.d and
   parks; hart 0 waits until all 64 bits are set, then checks each hart's mhartid arrived
   once (the word is all ones) and passes. */
#include "test.h"
RVTEST_BEGIN
  csrr s0, mhartid
  la s1, arrived
  li t0, 1
  sll t0, t0, s0
  amoor.d.aqrl t1, t0, (s1)
  /* 1: no hart checks in twice (its bit was clear) */
  and t1, t1, t0
  CHECK(1, t1, 0)
  bnez s0, park
  li t2, -1
2:ld t1, 0(s1)
  bne t1, t2, 2b
  RVTEST_PASS
park:
  wfi
  j park
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 64
arrived: .dword 0
