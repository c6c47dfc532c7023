/* Privilege transitions and delegation (Privileged §3.1.6, §3.1.8, §3.3): mret into S and
   U, traps delegated to S through medeleg, sret, CSR and instruction privilege checks. */
#include "test.h"
#define S_RECORD(cause_reg) la t5, s_trap_cause; ld cause_reg, 0(t5); sd zero, 0(t5)
RVTEST_BEGIN
  /* PMP: let S and U reach all memory (NAPOT over the whole space, RWX) */
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  /* delegate illegal instruction (2) and ecall from U (8) to S */
  li t0, (1 << 2) | (1 << 8)
  csrw medeleg, t0
  csrr a0, medeleg
  CHECK(1, a0, (1 << 2) | (1 << 8))
  /* ecall from M (11) should not be delegable (Privileged 1.12 §3.1.8: "should be
     hardwired to zero"; swemu does, QEMU 7.2 keeps the bit): write it, clear it again */
  li t0, 1 << 11
  csrs medeleg, t0
  csrc medeleg, t0
  csrr a0, medeleg
  CHECK(2, a0, (1 << 2) | (1 << 8))
  la t0, s_trap_entry
  csrw stvec, t0
  /* mret into S-mode: MPP = 1 */
  li t0, 3 << 11
  csrc mstatus, t0
  li t0, 1 << 11
  csrs mstatus, t0
  la t0, s_code
  csrw mepc, t0
  mret

s_code:
  /* after mret, MPP is U (least privileged) and MPIE set */
  /* an M-mode CSR from S is illegal, delegated to our S handler */
  csrr a0, mstatus
  S_RECORD(a0)
  CHECK(3, a0, 2)
  /* S can read sstatus; SPP is 0 as we came from M with mret, not a trap */
  csrr a0, sstatus
  /* ecall from S is not delegated: the M handler records 9 and returns here */
  ecall
  LOAD_TRAP(a0, a1)
  CHECK(4, a0, 9)
  /* mret in S is illegal */
  mret
  S_RECORD(a0)
  CHECK(5, a0, 2)
  /* sret into U: SPP = 0 */
  li t0, 1 << 8
  csrc sstatus, t0
  la t0, u_code
  csrw sepc, t0
  sret

u_code:
  ecall
  S_RECORD(a0)
  CHECK(6, a0, 8)
  csrr a0, sstatus
  S_RECORD(a0)
  CHECK(7, a0, 2)
  wfi
  S_RECORD(a0)
  CHECK(8, a0, 2)
  sret
  S_RECORD(a0)
  CHECK(9, a0, 2)
  /* U may read cycle/time/instret only where mcounteren and scounteren allow:
     both are 0 here, so rdcycle is illegal */
  rdcycle a0
  S_RECORD(a0)
  CHECK(10, a0, 2)
  /* the S handler saw SPP = 0 (trap from U): recorded in s_trap_spp */
  la t5, s_trap_spp
  ld a0, 0(t5)
  CHECK(11, a0, 0)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER

/* S-mode handler: record scause and sstatus.SPP, skip the instruction, sret. */
  .align 2
s_trap_entry:
  csrrw t6, sscratch, t6
  la t6, s_save
  sd t0, 0(t6)
  sd t1, 8(t6)
  csrr t0, scause
  la t1, s_trap_cause
  sd t0, 0(t1)
  csrr t0, sstatus
  srli t0, t0, 8
  andi t0, t0, 1
  sd t0, 8(t1)
  csrr t0, sepc
  lhu t1, 0(t0)
  andi t1, t1, 3
  addi t0, t0, 2
  li t6, 3
  bne t1, t6, 1f
  addi t0, t0, 2
1:csrw sepc, t0
  la t6, s_save
  ld t0, 0(t6)
  ld t1, 8(t6)
  csrrw t6, sscratch, t6
  sret

RVTEST_DATA
.data
.align 3
s_save: .dword 0, 0
s_trap_cause: .dword 0
s_trap_spp: .dword 0
