/* U-mode page faults and reserved PTE encodings under Sv39 (Privileged 1.12 §4.3.1-4.3.2,
   §4.4): U-mode load/store/fetch faults on S pages and on U pages without the permission,
   SUM and MXR, W without R, a V=0 pointer, a pointer where the last level needs a leaf, a
   misaligned gigapage, a PTE (leaf or pointer) whose PPN is outside RAM (access fault,
   not page fault), A/D updates on fetch and store (and none on a faulting access), and an
   instruction fetch that straddles into a page that faults (mepc = the instruction,
   mtval = the second page, §3.1.16). RAM's first 2 MiB is identity-mapped by 4 KiB pages
   (S, RWX), with U and special pages marked below; faults are not delegated: the M-mode
   handler records them and returns to the mode that trapped. `ecall` with a7 = 0x4d
   returns to M-mode (m_entry); s11 belongs to that handler. */
#include "test.h"
#define PTE_V 0x01
#define PTE_R 0x02
#define PTE_W 0x04
#define PTE_X 0x08
#define PTE_U 0x10
#define PTE_A 0x40
#define PTE_D 0x80
#define RWXAD (PTE_R | PTE_W | PTE_X | PTE_A | PTE_D)
#define MISC_VA 0x40000000
#define VA_W_ONLY (MISC_VA + 0x1000)
#define VA_WX (MISC_VA + 0x2000)
#define VA_NO_LEAF (MISC_VA + 0x3000)
#define VA_OUTSIDE (MISC_VA + 0x4000)
#define VA_AD (MISC_VA + 0x6000)
#define VA_RO_NOA (MISC_VA + 0x7000)
#define VA_EXEC_NOA (MISC_VA + 0x8000)
#define VA_V0_POINTER (MISC_VA + 0x200000)
#define VA_MISALIGNED_GIGA 0xc0000000
#define OUTSIDE_PA 0x200000
#define EXPECT(n, cause, tval) LOAD_TRAP(a0, a1); CHECK(n, a0, cause); CHECK(n, a1, tval); CLEAR_TRAP
#define EXPECT_AT(n, cause, sym) LOAD_TRAP(a0, a1); CHECK(n, a0, cause); li gp, n; la t6, sym; bne a1, t6, fail; CLEAR_TRAP
#define EXPECT_NONE(n) LOAD_TRAP(a0, a1); CHECK(n, a0, 0)
/* Leaf PTE for physical address register `pa` with `flags` into the slot at register `slot`. */
#define PUT_LEAF(slot, pa, flags) srli t0, pa, 12; slli t0, t0, 10; ori t0, t0, (flags) | PTE_V; sd t0, 0(slot)
/* Give the identity-mapped RAM page holding `label` the PTE flags `flags` (V added unless 0). */
#define MARK(label, flags) \
  la t1, label; li t2, 0x80000000; sub t2, t1, t2; srli t2, t2, 12; slli t2, t2, 3; \
  la t3, pt_l0_ram; add t3, t3, t2; srli t0, t1, 12; slli t0, t0, 10; \
  ori t0, t0, (flags); beqz t0, 7f; ori t0, t0, PTE_V; 7: \
  li t2, (flags); bnez t2, 6f; li t0, 0; 6: sd t0, 0(t3)
/* The PTE of the RAM page holding register `reg`'s address, into a0. */
#define PTE_OF(reg) \
  li t2, 0x80000000; sub t2, reg, t2; srli t2, t2, 12; slli t2, t2, 3; la t3, pt_l0_ram; add t3, t3, t2; ld a0, 0(t3)

RVTEST_BEGIN
  la t0, m_entry
  csrw mtvec, t0
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* RAM 0x80000000-0x801fffff: root[2] -> l1_ram, l1_ram[0] -> l0_ram, 512 identity S pages */
  la a2, pt_l0_ram
  li a3, 0x80000000
  li a4, 512
1:PUT_LEAF(a2, a3, RWXAD)
  addi a2, a2, 8
  li t0, 4096
  add a3, a3, t0
  addi a4, a4, -1
  bnez a4, 1b
  la a2, pt_l1_ram
  la a3, pt_l0_ram
  PUT_LEAF(a2, a3, 0)
  la a2, pt_root + 16
  la a3, pt_l1_ram
  PUT_LEAF(a2, a3, 0)
  /* root[0]: devices, VA 0-1G -> PA 0 (S, RW): the test device for `fail` in S */
  la a2, pt_root
  li a3, 0
  PUT_LEAF(a2, a3, PTE_R | PTE_W | PTE_A | PTE_D)
  /* root[1] -> l1_misc; l1_misc[0] -> l0_misc; l1_misc[1]: a pointer with V = 0 */
  la a2, pt_root + 8
  la a3, pt_l1_misc
  PUT_LEAF(a2, a3, 0)
  la a2, pt_l1_misc
  la a3, pt_l0_misc
  PUT_LEAF(a2, a3, 0)
  la a3, pt_l0_misc
  srli t0, a3, 12
  slli t0, t0, 10
  sd t0, 8(a2)                    /* V = 0, R = W = X = 0 */
  /* root[3]: a gigapage whose PPN is not 1 GiB aligned */
  la a2, pt_root + 24
  li a3, 0x80200000
  PUT_LEAF(a2, a3, RWXAD)
  /* l0_misc: the special pages */
  la a2, pt_l0_misc + 8
  la a3, s_data_page
  PUT_LEAF(a2, a3, PTE_W | PTE_A | PTE_D)              /* W without R */
  la a2, pt_l0_misc + 16
  PUT_LEAF(a2, a3, PTE_W | PTE_X | PTE_A | PTE_D)      /* W and X without R */
  la a2, pt_l0_misc + 24
  la a3, pt_l0_misc
  PUT_LEAF(a2, a3, 0)                                   /* a pointer at the last level */
  la a2, pt_l0_misc + 32
  li a3, OUTSIDE_PA
  PUT_LEAF(a2, a3, RWXAD)                               /* a leaf outside RAM */
  la a2, pt_l0_misc + 40
  la a3, s_data_page
  PUT_LEAF(a2, a3, RWXAD)
  ld t0, 0(a2)
  li t1, 1 << 63
  or t0, t0, t1
  sd t0, 0(a2)                                          /* reserved bit 63 set */
  la a2, pt_l0_misc + 48
  la a3, ad_page
  PUT_LEAF(a2, a3, PTE_R | PTE_W)                       /* A = D = 0 */
  la a2, pt_l0_misc + 56
  la a3, s_data_page
  PUT_LEAF(a2, a3, PTE_R)                               /* read-only, A = 0 */
  la a2, pt_l0_misc + 64
  la a3, exec_page
  PUT_LEAF(a2, a3, PTE_R | PTE_X)                       /* executable, A = 0 */
  /* U pages, and the page after `straddle` made invalid */
  MARK(u_code, PTE_U | PTE_R | PTE_X | PTE_A)
  MARK(u_code_2, PTE_U | PTE_R | PTE_X | PTE_A)
  MARK(u_data, PTE_U | PTE_R | PTE_W | PTE_A | PTE_D)
  MARK(u_ro, PTE_U | PTE_R | PTE_A)
  MARK(u_xonly, PTE_U | PTE_X | PTE_A)
  MARK(u_noexec, PTE_U | PTE_R | PTE_W | PTE_A | PTE_D)
  MARK(straddle_next, 0)
  la t0, pt_root
  srli t0, t0, 12
  li t1, 8 << 60
  or t0, t0, t1
  csrw satp, t0
  sfence.vma

  j u_tests

  /* S-mode tests */
s_part:
  ENTER(1, s_tests)
s_tests:
  /* 17: S store to a U page without SUM: store page fault; with SUM it goes through */
  la s0, u_data
  sd zero, 8(s0)
  EXPECT_AT(17, 15, u_data + 8)
  li t0, 1 << 18
  csrs sstatus, t0
  li t1, 0x77
  sd t1, 8(s0)
  EXPECT_NONE(18)
  ld a0, 8(s0)
  CHECK(19, a0, 0x77)
  li t0, 1 << 18
  csrc sstatus, t0
  /* 20: W without R: load, store and fetch page faults */
  li s0, VA_W_ONLY
  ld a0, 0(s0)
  EXPECT(20, 13, VA_W_ONLY)
  sd zero, 0(s0)
  EXPECT(21, 15, VA_W_ONLY)
  li s0, VA_WX
  jalr ra, 0(s0)
  EXPECT(22, 12, VA_WX)
  /* 23: a V = 0 pointer: page fault */
  li s0, VA_V0_POINTER
  ld a0, 0(s0)
  EXPECT(23, 13, VA_V0_POINTER)
  /* 24: a pointer where the last level needs a leaf: page fault */
  li s0, VA_NO_LEAF
  ld a0, 0(s0)
  EXPECT(24, 13, VA_NO_LEAF)
  sd zero, 0(s0)
  EXPECT(25, 15, VA_NO_LEAF)
  /* 26: a misaligned gigapage: page fault */
  li s0, VA_MISALIGNED_GIGA
  ld a0, 0(s0)
  EXPECT(26, 13, VA_MISALIGNED_GIGA)
  /* 27: a valid leaf whose PPN is outside RAM: access faults, mtval = the virtual address */
  li s0, VA_OUTSIDE + 8
  ld a0, 0(s0)
  EXPECT(27, 5, VA_OUTSIDE + 8)
  sd zero, 0(s0)
  EXPECT(28, 7, VA_OUTSIDE + 8)
  jalr ra, 0(s0)
  EXPECT(29, 1, VA_OUTSIDE + 8)
  /* (A pointer whose table is outside RAM is an access fault by §4.3.2 step 2; QEMU 7.2
     raises a page fault: checked on swemu alone by ClaimsTests, riscv-claims/pte_outside.S.) */
  /* 40: a leaf with a reserved bit (63) set: page fault (no Svpbmt/Svnapot, §4.4.1) */
  li s0, MISC_VA + 0x5000
  ld a0, 0(s0)
  EXPECT(40, 13, MISC_VA + 0x5000)
  /* 30: a store to a read-only page with A = 0 faults and leaves A clear */
  li s0, VA_RO_NOA
  sd zero, 0(s0)
  EXPECT(30, 15, VA_RO_NOA)
  la t0, pt_l0_misc
  ld a0, 56(t0)
  andi a0, a0, PTE_A | PTE_D
  CHECK(31, a0, 0)
  /* 32: a store to a page with A = D = 0 sets both */
  li s0, VA_AD
  li t1, 0x55
  sd t1, 0(s0)
  EXPECT_NONE(32)
  la t0, pt_l0_misc
  ld a0, 48(t0)
  andi a0, a0, PTE_A | PTE_D
  CHECK(33, a0, PTE_A | PTE_D)
  /* 34: a fetch from an executable page with A = 0 sets A, not D */
  li s0, VA_EXEC_NOA
  jalr ra, 0(s0)
  EXPECT_NONE(34)
  CHECK(35, s1, 0x600d)
  la t0, pt_l0_misc
  ld a0, 64(t0)
  andi a0, a0, PTE_A | PTE_D
  CHECK(36, a0, PTE_A)
  /* 37: a 4-byte instruction in the last two bytes of a page whose next page is invalid:
     fetch page fault, mepc = the instruction, mtval = the start of the next page */
  la s0, straddle_insn
  jalr ra, 0(s0)
  LOAD_TRAP(a0, a1)
  CHECK(37, a0, 12)
  la t0, straddle_next
  li gp, 38
  bne a1, t0, fail
  la t5, trap_epc
  ld a0, 0(t5)
  li gp, 39
  bne a0, s0, fail
  CLEAR_TRAP
  BACK_TO_M
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_BACK_TO_M_HANDLER

/* S-only code page: U jumps here to be refused. */
  .align 12
s_code_page:
  ret
  .align 12
/* U-mode tests: two pages, U|R|X. U runs the snippets between ENTER and BACK_TO_M; M
   (which does not translate) runs the checks between them in place. */
u_code:
u_tests:
  /* 1-6: U-mode against S pages: load, store, fetch page faults, mtval = the address */
  ENTER(0, 1f)
1:la s0, s_data_page
  ld a0, 0(s0)
  BACK_TO_M
  EXPECT_AT(1, 13, s_data_page)
  ENTER(0, 1f)
1:sd zero, 8(s0)
  BACK_TO_M
  EXPECT_AT(2, 15, s_data_page + 8)
  ENTER(0, 1f)
1:la s1, s_code_page
  jalr ra, 0(s1)
  BACK_TO_M
  LOAD_TRAP(a0, a1)
  CHECK(3, a0, 12)
  li gp, 4
  bne a1, s1, fail
  CLEAR_TRAP
  /* 5-7: U pages without the permission: store to read-only, load from execute-only, fetch
     from a non-executable page */
  ENTER(0, 1f)
1:la s0, u_ro
  sd zero, 0(s0)
  BACK_TO_M
  EXPECT_AT(5, 15, u_ro)
  ENTER(0, 1f)
1:la s0, u_xonly
  lw a0, 0(s0)
  BACK_TO_M
  EXPECT_AT(6, 13, u_xonly)
  ENTER(0, 1f)
1:la s0, u_noexec
  jalr ra, 0(s0)
  BACK_TO_M
  EXPECT_AT(7, 12, u_noexec)
  /* 8-10: what U may do: read its page, write it, read its read-only page */
  ENTER(0, 1f)
1:la s0, u_data
  ld s1, 0(s0)
  li t0, 0x5a
  sd t0, 16(s0)
  ld s2, 16(s0)
  la s0, u_ro
  ld s3, 0(s0)
  BACK_TO_M
  EXPECT_NONE(8)
  CHECK(9, s1, 0x1122334455667788)
  CHECK(10, s2, 0x5a)
  CHECK(11, s3, 0x99)
  /* 12: MXR lets U read its execute-only page; 13: SUM gives U nothing on S pages */
  li t0, (1 << 19) | (1 << 18)
  csrs mstatus, t0
  ENTER(0, 1f)
1:la s0, u_xonly
  lw s1, 0(s0)
  la s0, s_data_page
  ld a0, 0(s0)
  BACK_TO_M
  li t0, (1 << 19) | (1 << 18)
  csrc mstatus, t0
  CHECK(12, s1, 0x0badc0de)
  EXPECT_AT(13, 13, s_data_page)
  /* 14: MXR does not make an execute-only page writable */
  li t0, 1 << 19
  csrs mstatus, t0
  ENTER(0, 1f)
1:la s0, u_xonly
  sw zero, 0(s0)
  BACK_TO_M
  li t0, 1 << 19
  csrc mstatus, t0
  EXPECT_AT(14, 15, u_xonly)
  j s_part
  .align 12
u_code_2:
  .align 12

/* Data pages */
  .data
  .align 12
pt_root: .zero 4096
pt_l1_ram: .zero 4096
pt_l0_ram: .zero 4096
pt_l1_misc: .zero 4096
pt_l0_misc: .zero 4096
s_data_page: .dword 0x1234
  .align 12
u_data: .dword 0x1122334455667788
  .align 12
u_ro: .dword 0x99
  .align 12
u_xonly: .word 0x0badc0de
  .align 12
u_noexec: ret
  .align 12
ad_page: .dword 0
  .align 12
/* executable, reached at VA_EXEC_NOA with A = 0 */
exec_page:
  li s1, 0x600d
  ret
  .align 12
/* a 4-byte instruction (addi zero, zero, 0) at the last two bytes of the page */
straddle:
  .zero 4094
straddle_insn:
  .word 0x00000013
  .zero 4094
  .align 12
straddle_next = straddle + 4096
RVTEST_DATA
