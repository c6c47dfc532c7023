/* Sv39, Sv48 and Sv57 translation (Privileged §4.3-4.5) from S-mode: gigapage and 4 KiB
   mappings, U/SUM, MXR, execute permission, hardware A/D updates, misaligned superpages,
   non-canonical addresses, sfence.vma after a PTE change. Page faults are not delegated:
   the M-mode handler records them and returns to S. */
#include "test.h"
#define PTE_V 0x01
#define PTE_R 0x02
#define PTE_W 0x04
#define PTE_X 0x08
#define PTE_U 0x10
#define PTE_A 0x40
#define PTE_D 0x80
#define LEAF(pa, flags) (((pa) >> 12) << 10 | (flags) | PTE_V)
#define USER_VA 0x40001000
#define XONLY_VA 0x40002000

/* Store the PTE for physical address in register `pa` with `flags` at `slot`. */
#define SET_PTE(slot, pa, flags) \
  srli t0, pa, 12; slli t0, t0, 10; ori t0, t0, (flags) | PTE_V; la t1, slot; sd t0, 0(t1)
#define SET_TABLE(slot, table) \
  la t2, table; srli t0, t2, 12; slli t0, t0, 10; ori t0, t0, PTE_V; la t1, slot; sd t0, 0(t1)

RVTEST_BEGIN
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* root[0]: VA 0-1G -> PA 0 (devices), root[2]: VA 2G-3G -> PA 2G (RAM), both RWX A D */
  li t0, LEAF(0, PTE_R | PTE_W | PTE_X | PTE_A | PTE_D)
  la t1, pt_root
  sd t0, 0(t1)
  li t0, LEAF(0x80000000, PTE_R | PTE_W | PTE_X | PTE_A | PTE_D)
  sd t0, 16(t1)
  /* root[1] -> l1, l1[0] -> l0, l0[1]: user page (URWX, A=D=0), l0[2]: execute-only page */
  SET_TABLE(pt_root + 8, pt_l1)
  SET_TABLE(pt_l1, pt_l0)
  la a0, user_page
  SET_PTE(pt_l0 + 8, a0, PTE_U | PTE_R | PTE_W | PTE_X)
  la a0, xonly_page
  SET_PTE(pt_l0 + 16, a0, PTE_X | PTE_A)
  /* root[3] -> l1b, l1b[0]: a 2 MiB leaf whose PPN is not 2 MiB aligned (misaligned superpage) */
  SET_TABLE(pt_root + 24, pt_l1b)
  li a0, 0x80001000
  SET_PTE(pt_l1b, a0, PTE_R | PTE_W | PTE_A | PTE_D)
  /* Sv48 root: entry 0 -> the Sv39 root (VA < 512 GiB lands in the same tables);
     Sv57 root: entry 0 -> the Sv48 root */
  SET_TABLE(pt_root48, pt_root)
  SET_TABLE(pt_root57, pt_root48)

  /* enter S with Sv39 */
  la t0, pt_root
  srli t0, t0, 12
  li t1, 8 << 60
  or t0, t0, t1
  csrw satp, t0
  sfence.vma
  li t0, 3 << 11
  csrc mstatus, t0
  li t0, 1 << 11
  csrs mstatus, t0
  la t0, s_code
  csrw mepc, t0
  mret

s_code:
  /* 1: a U page is not readable from S without SUM */
  li s0, USER_VA
  ld a0, 0(s0)
  LOAD_TRAP(a0, a1)
  CHECK(1, a0, 13)
  CHECK(2, a1, USER_VA)
  la t5, trap_cause
  sd zero, 0(t5)
  li t0, 1 << 18
  csrs sstatus, t0
  /* 6: S may never execute a U page, even with SUM: fetch page fault, mtval = target.
     (Done before any data access to the page: QEMU 7.2 wrongly executes it once a read
     has put the page in its TLB.) */
  jalr ra, 0(s0)
  LOAD_TRAP(a0, a1)
  CHECK(6, a0, 12)
  CHECK(7, a1, USER_VA)
  /* 3: with SUM it is readable, and the hart set A in the PTE (not D: it was a read) */
  ld a0, 0(s0)
  CHECK(3, a0, 0x1122334455667788)
  la t0, pt_l0
  ld a0, 8(t0)
  andi a0, a0, PTE_A | PTE_D
  CHECK(4, a0, PTE_A)
  /* 5: a write sets D */
  li a1, 0x55
  sd a1, 8(s0)
  la t0, pt_l0
  ld a0, 8(t0)
  andi a0, a0, PTE_A | PTE_D
  CHECK(5, a0, PTE_A | PTE_D)
  /* 8: an execute-only page is not readable ... */
  li s1, XONLY_VA
  lw a0, 0(s1)
  LOAD_TRAP(a0, a1)
  CHECK(8, a0, 13)
  /* 9: ... unless MXR is set */
  li t0, 1 << 19
  csrs sstatus, t0
  lw a0, 0(s1)
  CHECK(9, a0, 0x0badc0de)
  li t0, 1 << 19
  csrc sstatus, t0
  /* 10: a store to a read-only mapping: store page fault. The X-only page has no W. */
  sw zero, 0(s1)
  LOAD_TRAP(a0, a1)
  CHECK(10, a0, 15)
  /* 11: misaligned superpage: page fault */
  li t0, 0xc0000000
  ld a0, 0(t0)
  LOAD_TRAP(a0, a1)
  CHECK(11, a0, 13)
  /* 12: non-canonical address (bit 38 set, bits 63:39 clear): page fault */
  li t0, 0x4000000000
  ld a0, 0(t0)
  LOAD_TRAP(a0, a1)
  CHECK(12, a0, 13)
  /* 13: remap the user page to other_page; after sfence.vma the new data is seen */
  ld a0, 0(s0)
  CHECK(13, a0, 0x1122334455667788)
  la a0, other_page
  SET_PTE(pt_l0 + 8, a0, PTE_U | PTE_R | PTE_W | PTE_A | PTE_D)
  sfence.vma s0, zero
  ld a0, 0(s0)
  CHECK(14, a0, 0x99aabbccddeeff00)
  /* 15: Sv48, then Sv57: the same mappings through more levels */
  la t0, pt_root48
  srli t0, t0, 12
  li t1, 9 << 60
  or t0, t0, t1
  csrw satp, t0
  sfence.vma
  csrr a0, satp
  srli a0, a0, 60
  CHECK(15, a0, 9)
  ld a0, 0(s0)
  CHECK(16, a0, 0x99aabbccddeeff00)
  la t0, pt_root57
  srli t0, t0, 12
  li t1, 10 << 60
  or t0, t0, t1
  csrw satp, t0
  sfence.vma
  csrr a0, satp
  srli a0, a0, 60
  CHECK(17, a0, 10)
  ld a0, 0(s0)
  CHECK(18, a0, 0x99aabbccddeeff00)
  /* 19: an unsupported mode (Sv64 = 11) is ignored: satp keeps Sv57 */
  li t0, 11 << 60
  csrw satp, t0
  csrr a0, satp
  srli a0, a0, 60
  CHECK(19, a0, 10)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
.align 12
pt_root: .zero 4096
pt_l1: .zero 4096
pt_l0: .zero 4096
pt_l1b: .zero 4096
pt_root48: .zero 4096
pt_root57: .zero 4096
user_page: .dword 0x1122334455667788
.align 12
xonly_page: .word 0x0badc0de
.align 12
other_page: .dword 0x99aabbccddeeff00
.align 12
