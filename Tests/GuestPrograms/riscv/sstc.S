/* Sstc (the Sstc extension spec, v1.0; Privileged 1.12 §3.1.9 for STIP): menvcfg.STCE
   gates S-mode access to stimecmp together with mcounteren.TM; with STCE set, mip.STIP is
   (time >= stimecmp) and read-only; a supervisor timer interrupt is taken in M when not
   delegated and in S when delegated through mideleg. `ecall` with a7 = 0x4d returns to
   M-mode (m_entry); s11 belongs to that handler. */
#include "test.h"
#define MENVCFG_STCE (1 << 63)
#define STIP (1 << 5)
#define INSN_CSRR_A0_STIMECMP 0x14d02573

RVTEST_BEGIN
  la t0, m_entry
  csrw mtvec, t0
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* 1: STCE is writable, and M-mode reaches stimecmp whatever STCE says */
  li t0, MENVCFG_STCE
  csrs menvcfg, t0
  csrr a0, menvcfg
  srli a0, a0, 63
  CHECK(1, a0, 1)
  li t0, MENVCFG_STCE
  csrc menvcfg, t0
  li t0, -1
  csrw stimecmp, t0
  csrr a0, stimecmp
  CHECK(2, a0, -1)
  /* 3: S-mode with STCE = 0 (TM = 1): illegal, mtval = the instruction */
  li t0, 2
  csrw mcounteren, t0
  ENTER(1, s_nostce)
s_nostce:
  csrr a0, stimecmp
  LOAD_TRAP(a0, a1)
  CHECK(3, a0, 2)
  CHECK(4, a1, INSN_CSRR_A0_STIMECMP)
  CLEAR_TRAP
  BACK_TO_M
  /* 5: STCE = 1 but mcounteren.TM = 0: still illegal */
  li t0, MENVCFG_STCE
  csrs menvcfg, t0
  csrw mcounteren, zero
  ENTER(1, s_notm)
s_notm:
  csrr a0, stimecmp
  LOAD_TRAP(a0, a1)
  CHECK(5, a0, 2)
  CLEAR_TRAP
  BACK_TO_M
  /* 6: STCE = 1 and TM = 1: S-mode reads and writes it */
  li t0, 2
  csrw mcounteren, t0
  ENTER(1, s_ok)
s_ok:
  li t0, 0x123456789
  csrw stimecmp, t0
  csrr a0, stimecmp
  CHECK(6, a0, 0x123456789)
  LOAD_TRAP(a0, a1)
  CHECK(7, a0, 0)
  li t0, -1
  csrw stimecmp, t0
  BACK_TO_M
  /* 8: U-mode never: illegal even with TM set in mcounteren and scounteren */
  li t0, 2
  csrw scounteren, t0
  ENTER(0, u_code)
u_code:
  csrr a0, stimecmp
  LOAD_TRAP(a0, a1)
  CHECK(8, a0, 2)
  CLEAR_TRAP
  BACK_TO_M

  /* 9: stimecmp far in the future: STIP clear */
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(9, a0, 0)
  /* 10: stimecmp = 0 <= time: STIP set */
  csrw stimecmp, zero
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(10, a0, STIP)
  /* 11: STIP is read-only with STCE: clearing it through mip does nothing */
  li t0, STIP; csrc mip, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(11, a0, STIP)
  /* 12: stimecmp set later again: STIP drops */
  rdtime t0
  li t1, 10000000
  add t0, t0, t1
  csrw stimecmp, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(12, a0, 0)
  /* 13: with STIP owned by Sstc, setting it through mip does nothing either */
  li t0, STIP; csrs mip, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(13, a0, 0)
  /* 14: time catches up with stimecmp: STIP rises by itself */
  rdtime t0
  addi t0, t0, 100
  csrw stimecmp, t0
  li t1, 10000000
1:csrr a0, mip
  andi a0, a0, STIP
  bnez a0, 2f
  addi t1, t1, -1
  bnez t1, 1b
2:CHECK(14, a0, STIP)

  /* 15: not delegated: taken in M (MIE set), mcause = interrupt 5 */
  la t5, trap_count
  sd zero, 0(t5)
  li t0, STIP
  csrs mie, t0
  csrsi mstatus, 8
  nop
  nop
  csrci mstatus, 8
  LOAD_TRAP(a0, a1)
  CHECK(15, a0, 0x8000000000000005)
  CLEAR_TRAP

  /* 16: delegated to S: S sets stimecmp = now + 1000 and waits in WFI; the S handler sees
     scause = interrupt 5 and moves stimecmp away */
  li t0, -1
  csrw stimecmp, t0
  li t0, STIP
  csrs mideleg, t0
  csrs mie, t0
  la t0, s_trap_entry
  csrw stvec, t0
  ENTER(1, s_timer)
s_timer:
  csrsi sstatus, 2
  rdtime t0
  addi t0, t0, 1000
  csrw stimecmp, t0
3:wfi
  la t5, s_trap_count
  ld a0, 0(t5)
  beqz a0, 3b
  csrci sstatus, 2
  la t5, s_trap_cause
  ld a0, 0(t5)
  CHECK(16, a0, 0x8000000000000005)
  /* 17: the handler's stimecmp write cleared STIP */
  csrr a0, sip
  andi a0, a0, STIP
  CHECK(17, a0, 0)
  CHECK(18, s1, 1)       /* ... and SPP was S: the trap came from S-mode */
  BACK_TO_M
  /* 19: clearing STCE hands STIP back to software: writable through mip again.
     (The stimecmp is pushed away first: QEMU 7.2 keeps driving STIP from stimecmp after
     STCE is cleared, which the spec forbids: "STIP in mip and sip reverts to its defined
     behavior as if this extension is not implemented" (menvcfg.STCE, Privileged 1.13
     §3.1.18). ClaimsTests.specAnswers checks that on swemu alone,
     riscv-claims/sstc_stce_off.S.) */
  li t0, -1
  csrw stimecmp, t0
  li t0, MENVCFG_STCE
  csrc menvcfg, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(19, a0, 0)
  li t0, STIP; csrs mip, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(20, a0, STIP)
  li t0, STIP; csrc mip, t0
  csrr a0, mip
  andi a0, a0, STIP
  CHECK(21, a0, 0)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_BACK_TO_M_HANDLER
/* S-mode handler for the timer interrupt: record scause and SPP (in s1), count, and push
   stimecmp to the far future (which clears STIP). */
  .align 2
s_trap_entry:
  csrrw t6, sscratch, t6
  la t6, s_trap_cause
  sd t0, 16(t6)
  csrr t0, scause
  sd t0, 0(t6)
  ld t0, 8(t6)
  addi t0, t0, 1
  sd t0, 8(t6)
  csrr s1, sstatus
  srli s1, s1, 8
  andi s1, s1, 1
  li t0, -1
  csrw stimecmp, t0
  ld t0, 16(t6)
  csrrw t6, sscratch, t6
  sret
RVTEST_DATA
.data
.align 3
s_trap_cause: .dword 0
s_trap_count: .dword 0
s_save: .dword 0
