/* Run on swemu only (ClaimsTests): QEMU 7.2 disagrees with the spec here.
   Privileged 1.12 §3.1.10: mhpmcounter3-31 and mhpmevent3-31 all exist ("a legal
   implementation is to make both the counter and its corresponding event selector be
   read-only 0", which swemu does); QEMU 7.2 (16 counters) raises illegal instruction on
   mhpmcounter19-31 and hpmcounter19-31. §3.1.12: mcountinhibit bit 1 (there is no TM bit)
   is read-only zero and the register is 32 bits; QEMU 7.2 keeps every bit written. */
#include "test.h"
RVTEST_BEGIN
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* 1-4: counters and events, first, middle and last, take writes and read zero */
  li t0, 0x1234
  csrw mhpmcounter3, t0
  csrr a0, mhpmcounter3
  CHECK(1, a0, 0)
  csrw mhpmcounter19, t0
  csrr a0, mhpmcounter19
  CHECK(2, a0, 0)
  csrw mhpmcounter31, t0
  csrr a0, mhpmcounter31
  CHECK(3, a0, 0)
  csrw mhpmevent31, t0
  csrr a0, mhpmevent31
  CHECK(4, a0, 0)
  la t5, trap_count
  ld a0, 0(t5)
  CHECK(5, a0, 0)
  /* 6: mcountinhibit: bit 1 and bits 63:32 read zero */
  li t0, -1
  csrw mcountinhibit, t0
  csrr a0, mcountinhibit
  CHECK(6, a0, 0xfffffffd)
  csrw mcountinhibit, zero
  /* 7: hpmcounter31 from S with mcounteren.HPM31 set: reads zero, no trap */
  li t0, -1
  csrw mcounteren, t0
  li t0, 3 << 11
  csrc mstatus, t0
  li t0, 1 << 11
  csrs mstatus, t0
  la t0, 1f
  csrw mepc, t0
  mret
1:csrr a0, hpmcounter31
  CHECK(7, a0, 0)
  csrr a0, hpmcounter19
  CHECK(8, a0, 0)
  la t5, trap_count
  ld a0, 0(t5)
  CHECK(9, a0, 0)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
