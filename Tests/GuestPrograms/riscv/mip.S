/* mip.SEIP under CSRRS/CSRRC (Privileged §3.1.9): the bit software reads is the OR of its
   own writable bit and the PLIC's signal, but "only the software-writable SEIP bit
   participates in the read-modify-write sequence". OpenSBI injects IPIs with `csrs mip,
   SSIP`; if that latched the PLIC's signal into the writable bit, SEIP would stay pending
   after the PLIC dropped it (a guest interrupt storm on multi-hart machines). The UART's
   transmitter-empty interrupt drives PLIC source 10 to context 1 (hart 0's S-level). */
#include "test.h"
#define PLIC 0xc000000
RVTEST_BEGIN
  li s0, PLIC
  li t0, 1
  sw t0, 40(s0)              /* priority[10] = 1 */
  li s1, PLIC + 0x2080       /* context 1: enable bits of sources 0-31 */
  li t0, 1 << 10
  sw t0, 0(s1)
  li s2, PLIC + 0x201000     /* context 1: threshold; claim/complete at +4 */
  sw zero, 0(s2)
  li s3, UART0
  li t0, 2
  sb t0, 1(s3)               /* IER = ETBEI: the empty transmitter raises the line */
  li t1, 1 << 9
  csrr a0, mip
  and a0, a0, t1
  CHECK(1, a0, 1 << 9)       /* SEIP comes from the PLIC */
  csrs mip, 2                /* set SSIP by read-modify-write while SEIP is asserted */
  sb zero, 1(s3)             /* IER = 0: the UART's line drops (the PLIC keeps it pending) */
  lw a0, 4(s2)               /* claim */
  CHECK(2, a0, 10)
  sw a0, 4(s2)               /* complete: nothing pending any more */
  csrr a0, mip
  li t1, (1 << 9) | 2
  and a0, a0, t1
  CHECK(3, a0, 2)            /* SSIP set, SEIP gone with the PLIC's signal */
  csrc mip, 2
  csrr a0, mip
  and a0, a0, t1
  CHECK(4, a0, 0)
  /* The writable bit itself is kept and ORed in. */
  li t0, 1 << 9
  csrs mip, t0
  csrr a0, mip
  and a0, a0, t1
  CHECK(5, a0, 1 << 9)
  csrc mip, t0
  csrr a0, mip
  and a0, a0, t1
  CHECK(6, a0, 0)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
