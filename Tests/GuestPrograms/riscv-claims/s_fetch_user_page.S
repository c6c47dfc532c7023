/* Run on swemu only (ClaimsTests): QEMU 7.2 disagrees with the spec here. Privileged 1.12
   §4.3.1 (SUM): "S-mode may never execute instructions from user pages, regardless of the
   state of SUM." QEMU 7.2 executes from a U page once an S-mode load with SUM has put the
   page in its TLB (found by QEMUOracleTests: QEMUDeparture's sFetchFromUserPage). riscv/mmu.S
   checks the fetch on both before any data access to the page. */
#include "test.h"
#define ALIAS 0xC0000000
RVTEST_BEGIN
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* root[0]: devices, root[2]: RAM (gigapages, RWX A D); root[3]: RAM again as U pages */
  la t1, pt_root
  li t0, 0xcf
  sd t0, 0(t1)
  li t0, (0x80000000 >> 12) << 10 | 0xcf
  sd t0, 16(t1)
  li t0, (0x80000000 >> 12) << 10 | 0xdf
  sd t0, 24(t1)
  srli t0, t1, 12
  li t1, 8 << 60
  or t0, t0, t1
  csrw satp, t0
  sfence.vma
  li t0, 3 << 11
  csrc mstatus, t0
  li t0, 1 << 11 | 1 << 18
  csrs mstatus, t0
  la t0, 1f
  csrw mepc, t0
  mret
  /* S-mode, SUM set: s0 = utarget seen through the U alias */
1:la s0, utarget
  li t0, 0x80000000
  sub s0, s0, t0
  li t0, ALIAS
  add s0, s0, t0
  ld a0, 0(s0)
  LOAD_TRAP(a0, a1)
  CHECK(1, a0, 0)
  jalr ra, 0(s0)
  LOAD_TRAP(a0, a1)
  CHECK(2, a0, 12)
  li gp, 3
  bne a1, s0, fail
  RVTEST_PASS
RVTEST_FAIL_CODE
utarget:
  ret
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
.align 12
pt_root: .zero 4096
