/* A extension (§8): LR/SC pairs, a store between LR and SC breaking the reservation,
   SC without LR failing, AMOs with their W-variant sign extension and min/max signedness. */
#include "test.h"
RVTEST_BEGIN
  la s0, word
  /* LR/SC succeeds: rd = 0 and memory updated */
  lr.d a0, (s0)
  CHECK(1, a0, 5)
  li a1, 7
  sc.d a2, a1, (s0)
  CHECK(2, a2, 0)
  ld a0, 0(s0)
  CHECK(3, a0, 7)
  /* SC without a reservation fails: rd = 1, memory unchanged */
  li a1, 9
  sc.d a2, a1, (s0)
  CHECK(4, a2, 1)
  ld a0, 0(s0)
  CHECK(5, a0, 7)
  /* a store of another value to the reserved word between LR and SC breaks it */
  lr.d a0, (s0)
  li t0, 11
  sd t0, 0(s0)
  li a1, 13
  sc.d a2, a1, (s0)
  CHECK(6, a2, 1)
  ld a0, 0(s0)
  CHECK(7, a0, 11)
  /* lr.w sign-extends */
  la s1, wordw
  lr.w a0, (s1)
  CHECK(8, a0, 0xffffffff80000000)
  li a1, 1
  sc.w a2, a1, (s1)
  CHECK(9, a2, 0)
  lw a0, 0(s1)
  CHECK(10, a0, 1)
  /* AMOs return the old value */
  li t0, 100
  sd t0, 0(s0)
  li a1, 5
  amoadd.d a0, a1, (s0)
  CHECK(11, a0, 100)
  ld a0, 0(s0)
  CHECK(12, a0, 105)
  li a1, 0xff
  amoand.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(13, a0, 105)
  li a1, 0x100
  amoor.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(14, a0, 0x169)
  li a1, 0x1
  amoxor.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(15, a0, 0x168)
  li a1, 42
  amoswap.d a0, a1, (s0)
  CHECK(16, a0, 0x168)
  ld a0, 0(s0)
  CHECK(17, a0, 42)
  /* signed vs unsigned min/max */
  li a1, -1
  amomin.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(18, a0, -1)
  li a1, 3
  amominu.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(19, a0, 3)
  li a1, -5
  amomax.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(20, a0, 3)
  li a1, -5
  amomaxu.d a0, a1, (s0)
  ld a0, 0(s0)
  CHECK(21, a0, -5)
  /* W variants compare 32-bit values and sign-extend the result */
  li t0, 0x7fffffff
  sw t0, 0(s1)
  li a1, 1
  amoadd.w a0, a1, (s1)
  CHECK(22, a0, 0x7fffffff)
  lw a0, 0(s1)
  CHECK(23, a0, 0xffffffff80000000)
  li a1, 0x7fffffff
  amomax.w a0, a1, (s1)
  lw a0, 0(s1)
  CHECK(24, a0, 0x7fffffff)
  li a1, 0x80000000
  amomaxu.w a0, a1, (s1)
  lw a0, 0(s1)
  CHECK(25, a0, 0xffffffff80000000)
  /* an upper word outside the operand is untouched by the .w AMO */
  lw a0, 4(s1)
  CHECK(26, a0, 0x12345678)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
.align 3
word: .dword 5
wordw: .word 0x80000000, 0x12345678
