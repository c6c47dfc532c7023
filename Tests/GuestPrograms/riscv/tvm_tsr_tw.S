/* Virtualization-support traps of mstatus (Privileged 1.12 §3.1.6.5): with TVM, S-mode
   reads and writes of satp and SFENCE.VMA are illegal instructions; with TSR, SRET in
   S-mode is illegal; with TW, WFI in S-mode is illegal; WFI in U-mode is illegal whether
   TW is set or not (S-mode exists). M-mode is never affected. Traps are not delegated: the
   M-mode handler records mcause/mtval (the instruction's bits) and returns to the next
   instruction in the mode that trapped. `ecall` with a7 = 0x4d returns to M-mode
   (m_entry); s11 belongs to that handler. */
#include "test.h"
#define MSTATUS_TVM (1 << 20)
#define MSTATUS_TW (1 << 21)
#define MSTATUS_TSR (1 << 22)
#define INSN_CSRR_A0_SATP 0x18002573
#define INSN_CSRW_SATP_ZERO 0x18001073
#define INSN_SFENCE_VMA 0x12000073
#define INSN_SRET 0x10200073
#define INSN_WFI 0x10500073
/* mret into privilege `mpp` (0 U, 1 S) at `label`. */
/* Expect an illegal-instruction trap whose mtval is `insn`. */
#define EXPECT_ILLEGAL(n, insn) \
  LOAD_TRAP(a0, a1); CHECK(n, a0, 2); CHECK(n, a1, insn); CLEAR_TRAP

RVTEST_BEGIN
  la t0, m_entry
  csrw mtvec, t0
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0

  /* TVM = 1 */
  li t0, MSTATUS_TVM
  csrs mstatus, t0
  /* 1: M-mode still reads and writes satp and runs SFENCE.VMA */
  csrw satp, zero
  csrr a0, satp
  sfence.vma
  la t5, trap_count
  ld a0, 0(t5)
  CHECK(1, a0, 0)
  ENTER(1, s_tvm)
s_tvm:
  csrr a0, satp
  EXPECT_ILLEGAL(2, INSN_CSRR_A0_SATP)
  csrw satp, zero
  EXPECT_ILLEGAL(3, INSN_CSRW_SATP_ZERO)
  sfence.vma
  EXPECT_ILLEGAL(4, INSN_SFENCE_VMA)
  /* other S CSRs are unaffected */
  csrr a0, sscratch
  LOAD_TRAP(a0, a1)
  CHECK(5, a0, 0)
  BACK_TO_M
  /* 6: back in M-mode: an M-only CSR reads without a trap */
  csrr a0, mscratch
  LOAD_TRAP(a0, a1)
  CHECK(6, a0, 0)

  /* TVM = 0: satp and SFENCE.VMA from S are legal */
  li t0, MSTATUS_TVM
  csrc mstatus, t0
  ENTER(1, s_notvm)
s_notvm:
  csrr a0, satp
  csrw satp, zero
  sfence.vma
  la t5, trap_count
  ld a0, 0(t5)
  CHECK(7, a0, 3)      /* only the three trapped instructions above */
  BACK_TO_M

  /* TSR = 1: SRET in S is illegal */
  li t0, MSTATUS_TSR
  csrs mstatus, t0
  ENTER(1, s_tsr)
s_tsr:
  la t0, s_after_sret
  csrw sepc, t0
  li t0, 1 << 8
  csrs sstatus, t0     /* SPP = S */
  sret
  EXPECT_ILLEGAL(8, INSN_SRET)
  BACK_TO_M
  /* 9: SRET in M-mode is not affected by TSR: it returns to S at sepc */
  la t0, s_after_sret_m
  csrw sepc, t0
  li t0, 1 << 8
  csrs sstatus, t0
  sret
  j fail_9
s_after_sret_m:
  csrr a0, sscratch      /* legal in S */
  LOAD_TRAP(a0, a1)
  CHECK(9, a0, 0)
  BACK_TO_M
  /* TSR = 0: SRET in S works */
  li t0, MSTATUS_TSR
  csrc mstatus, t0
  ENTER(1, s_notsr)
s_notsr:
  la t0, s_after_sret
  csrw sepc, t0
  li t0, 1 << 8
  csrs sstatus, t0
  sret
  j fail_10
s_after_sret:
  LOAD_TRAP(a0, a1)
  CHECK(10, a0, 0)
  BACK_TO_M

  /* SSIP pending, enabled in mie and delegated, with sstatus.SIE = SPIE = mstatus.MIE = 0:
     never taken, but it makes every WFI that is allowed complete at once (§3.3.3). */
  li t0, (1 << 1) | (1 << 5)
  csrc mstatus, t0
  li t0, 2
  csrs mideleg, t0
  csrs mie, t0
  csrs mip, t0
  /* TW = 1: WFI in S is illegal, in M it is not */
  li t0, MSTATUS_TW
  csrs mstatus, t0
  wfi
  LOAD_TRAP(a0, a1)
  CHECK(11, a0, 0)
  ENTER(1, s_tw)
s_tw:
  wfi
  EXPECT_ILLEGAL(12, INSN_WFI)
  BACK_TO_M
  /* 13: WFI in U with TW = 1 is illegal (SSIP cleared first: in U a delegated S-level
     interrupt is always enabled) */
  csrc mip, 2
  ENTER(0, u_tw)
u_tw:
  wfi
  EXPECT_ILLEGAL(13, INSN_WFI)
  BACK_TO_M
  /* TW = 0: WFI in S completes (an interrupt is pending), in U it is still illegal */
  li t0, MSTATUS_TW
  csrc mstatus, t0
  csrs mip, 2
  ENTER(1, s_notw)
s_notw:
  wfi
  LOAD_TRAP(a0, a1)
  CHECK(14, a0, 0)
  BACK_TO_M
  csrc mip, 2
  ENTER(0, u_notw)
u_notw:
  wfi
  EXPECT_ILLEGAL(15, INSN_WFI)
  /* 16: and TVM/TSR do not make U-mode's SFENCE.VMA/SRET legal: they are illegal anyway */
  sfence.vma
  EXPECT_ILLEGAL(16, INSN_SFENCE_VMA)
  BACK_TO_M
  RVTEST_PASS
fail_9:
  li gp, 9
  j fail
fail_10:
  li gp, 10
  j fail
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_BACK_TO_M_HANDLER
RVTEST_DATA
