/* Zicntr/Zihpm counters (Privileged 1.12 §3.1.10-3.1.12, §4.1.5): mcountinhibit stops
   mcycle and minstret (and a value written while stopped reads back unchanged); the
   mhpmcounter/mhpmevent CSRs exist and take writes; mcounteren and scounteren gate
   cycle/time/instret/hpmcounterN in S and U (illegal instruction, mtval = the
   instruction). What swemu and QEMU 7.2 do differently is left out here: swemu's
   mhpmcounters/mhpmevents are read-only zero (allowed, §3.1.10), QEMU 7.2's first 16 hold
   what is written and mhpmcounter19-31 (which the spec requires to exist) raise illegal
   instruction in QEMU; mcountinhibit bit 1 is hardwired zero (§3.1.12) but QEMU 7.2 keeps
   it. ClaimsTests.specAnswers checks those on swemu alone
   (riscv-claims/hpm_spec.S). `ecall` with a7 = 0x4d
   returns to M-mode (m_entry); s11 belongs to that handler. */
#include "test.h"
#define EXPECT_ILLEGAL(n) LOAD_TRAP(a0, a1); CHECK(n, a0, 2); CLEAR_TRAP
#define EXPECT_OK(n) LOAD_TRAP(a0, a1); CHECK(n, a0, 0)
#define INSN_RDCYCLE_A0 0xc0002573

RVTEST_BEGIN
  la t0, m_entry
  csrw mtvec, t0
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0

  /* 1: CY and IR inhibit bits are writable */
  li t0, 5
  csrw mcountinhibit, t0
  csrr a0, mcountinhibit
  CHECK(1, a0, 5)
  /* 2-3: stopped: mcycle and minstret do not move */
  csrr a1, mcycle
  csrr a2, minstret
  nop
  nop
  csrr a3, mcycle
  csrr a4, minstret
  li gp, 2
  bne a1, a3, fail
  li gp, 3
  bne a2, a4, fail
  /* 4-5: a value written while stopped reads back as written */
  li t0, 1000
  csrw minstret, t0
  csrr a0, minstret
  CHECK(4, a0, 1000)
  csrw mcycle, t0
  nop
  csrr a0, mcycle
  CHECK(5, a0, 1000)
  /* 6: only IR stopped: minstret stays, mcycle moves on */
  li t0, 4
  csrw mcountinhibit, t0
  csrr a1, mcycle
  nop
  nop
  csrr a2, mcycle
  csrr a0, minstret
  CHECK(6, a0, 1000)
  li gp, 7
  bgeu a1, a2, fail
  /* 8: running again: minstret counts from the written value */
  csrw mcountinhibit, zero
  nop
  nop
  csrr a0, minstret
  li gp, 8
  li t6, 1002
  bltu a0, t6, fail
  /* 9: the HPM inhibit bits take writes too (bit 1, for time, is left out: see above) */
  li t0, 0xfffffff8
  csrw mcountinhibit, t0
  csrr a0, mcountinhibit
  CHECK(9, a0, 0xfffffff8)
  csrw mcountinhibit, zero
  /* 10: mhpmcounter3..18 and mhpmevent3..31 are CSRs in M-mode: no trap */
  csrw mhpmevent3, zero
  csrr a0, mhpmevent3
  csrw mhpmevent17, zero
  csrr a0, mhpmevent17
  csrw mhpmevent31, zero
  csrr a0, mhpmevent31
  csrw mhpmcounter3, zero
  csrr a0, mhpmcounter3
  csrw mhpmcounter18, zero
  csrr a0, mhpmcounter18
  la t5, trap_count
  ld a0, 0(t5)
  CHECK(10, a0, 0)

  /* counter-enable gating from S: mcounteren = 0, all illegal */
  csrw mcounteren, zero
  ENTER(1, s_none)
s_none:
  rdcycle a0
  LOAD_TRAP(a0, a1)
  CHECK(11, a0, 2)
  CHECK(12, a1, INSN_RDCYCLE_A0)
  CLEAR_TRAP
  rdtime a0
  EXPECT_ILLEGAL(13)
  rdinstret a0
  EXPECT_ILLEGAL(14)
  csrr a0, hpmcounter3
  EXPECT_ILLEGAL(15)
  csrr a0, hpmcounter31
  EXPECT_ILLEGAL(16)
  BACK_TO_M
  /* mcounteren = CY | IR: cycle and instret allowed, time and hpmcounter3 not */
  li t0, 5
  csrw mcounteren, t0
  ENTER(1, s_cy_ir)
s_cy_ir:
  rdcycle a0
  EXPECT_OK(17)
  rdinstret a0
  EXPECT_OK(18)
  rdtime a0
  EXPECT_ILLEGAL(19)
  csrr a0, hpmcounter3
  EXPECT_ILLEGAL(20)
  /* S may not write them (read-only CSRs) even when enabled */
  csrw cycle, zero
  EXPECT_ILLEGAL(21)
  BACK_TO_M
  /* mcounteren = TM | HPM3: time and hpmcounter3 allowed, cycle not */
  li t0, 0xa
  csrw mcounteren, t0
  ENTER(1, s_tm)
s_tm:
  rdtime a0
  EXPECT_OK(22)
  csrr a0, hpmcounter3
  EXPECT_OK(23)
  rdcycle a0
  EXPECT_ILLEGAL(24)
  BACK_TO_M
  /* U needs both: mcounteren = all, scounteren = 0: illegal */
  li t0, 0xf
  csrw mcounteren, t0
  csrw scounteren, zero
  ENTER(0, u_none)
u_none:
  rdcycle a0
  EXPECT_ILLEGAL(25)
  rdtime a0
  EXPECT_ILLEGAL(26)
  rdinstret a0
  EXPECT_ILLEGAL(27)
  csrr a0, hpmcounter3
  EXPECT_ILLEGAL(28)
  BACK_TO_M
  /* scounteren = IR | HPM3: instret and hpmcounter3 allowed in U */
  li t0, 0xc
  csrw scounteren, t0
  ENTER(0, u_ir)
u_ir:
  rdinstret a0
  EXPECT_OK(29)
  csrr a0, hpmcounter3
  EXPECT_OK(30)
  rdcycle a0
  EXPECT_ILLEGAL(31)
  rdtime a0
  EXPECT_ILLEGAL(32)
  BACK_TO_M
  /* scounteren allows everything but mcounteren = IR only: U gets instret alone */
  li t0, 4
  csrw mcounteren, t0
  li t0, 0xf
  csrw scounteren, t0
  ENTER(0, u_m_ir)
u_m_ir:
  rdinstret a0
  EXPECT_OK(33)
  rdcycle a0
  EXPECT_ILLEGAL(34)
  rdtime a0
  EXPECT_ILLEGAL(35)
  csrr a0, hpmcounter3
  EXPECT_ILLEGAL(36)
  /* 37: U never reaches the M-mode counters */
  csrr a0, mcycle
  EXPECT_ILLEGAL(37)
  BACK_TO_M
  /* 38: in S with everything enabled, instret advances */
  li t0, 0xf
  csrw mcounteren, t0
  ENTER(1, s_all)
s_all:
  rdinstret a1
  nop
  nop
  rdinstret a2
  li gp, 38
  bgeu a1, a2, fail
  BACK_TO_M
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_BACK_TO_M_HANDLER
RVTEST_DATA
