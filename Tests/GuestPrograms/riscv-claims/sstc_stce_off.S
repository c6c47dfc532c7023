/* Run on swemu only (ClaimsTests): QEMU 7.2 disagrees with the spec here. With
   menvcfg.STCE = 0, "STIP in mip and sip reverts to its defined behavior as if this
   extension is not implemented" (Privileged 1.13 §3.1.18, menvcfg.STCE; the Sstc spec):
   stimecmp <= time must not raise STIP. QEMU 7.2 raises it. */
#include "test.h"
#define STIP (1 << 5)
RVTEST_BEGIN
  csrw menvcfg, zero
  csrw stimecmp, zero
  nop
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(1, a0, 0)
  /* and software still owns the bit */
  li t0, STIP
  csrs mip, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(2, a0, STIP)
  li t0, STIP
  csrc mip, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(3, a0, 0)
  /* turning STCE on hands STIP to the comparison */
  li t0, 1 << 63
  csrs menvcfg, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(4, a0, STIP)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
