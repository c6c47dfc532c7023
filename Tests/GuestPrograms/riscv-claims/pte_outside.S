/* Run on swemu only (ClaimsTests): QEMU 7.2 disagrees with the spec here. Privileged 1.12
   §4.3.2 step 2: "If accessing pte violates a PMA or PMP check, raise an access-fault
   exception corresponding to the original access type." A pointer PTE whose next table is
   outside RAM (nothing at PA 0x200000 on virt) therefore gives a load/store/fetch access
   fault; QEMU 7.2 raises a page fault. (A leaf whose page is outside RAM is checked on both
   in riscv/pagefaults.S.) */
#include "test.h"
#define VA 0x100000000
RVTEST_BEGIN
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* root[0]: devices, root[2]: RAM (gigapages, RWX A D); root[4]: a pointer to PA 0x200000 */
  la t1, pt_root
  li t0, 0xcf
  sd t0, 0(t1)
  li t0, (0x80000000 >> 12) << 10 | 0xcf
  sd t0, 16(t1)
  li t0, (0x200000 >> 12) << 10 | 1
  sd t0, 32(t1)
  srli t0, t1, 12
  li t1, 8 << 60
  or t0, t0, t1
  csrw satp, t0
  sfence.vma
  li t0, 3 << 11
  csrc mstatus, t0
  li t0, 1 << 11
  csrs mstatus, t0
  la t0, 1f
  csrw mepc, t0
  mret
1:li s0, VA
  ld a0, 8(s0)
  LOAD_TRAP(a0, a1)
  CHECK(1, a0, 5)
  CHECK(2, a1, VA + 8)
  sd zero, 16(s0)
  LOAD_TRAP(a0, a1)
  CHECK(3, a0, 7)
  CHECK(4, a1, VA + 16)
  jalr ra, 0(s0)
  LOAD_TRAP(a0, a1)
  CHECK(5, a0, 1)
  CHECK(6, a1, VA)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
.align 12
pt_root: .zero 4096
