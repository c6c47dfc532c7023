/* ACLINT timer and software interrupts: mtime advances, a machine timer interrupt is taken
   after WFI once mtime passes mtimecmp (mcause = interrupt 7), clearing it by moving
   mtimecmp, and a machine software interrupt through msip (mcause = interrupt 3). */
#include "test.h"
#define ACLINT 0x2000000
#define MTIMECMP 0x2004000
#define MTIME 0x200bff8
RVTEST_BEGIN
  li s0, MTIME
  ld a0, 0(s0)
  /* spin until mtime moves */
  li t1, 1000000
1:ld a1, 0(s0)
  bne a1, a0, 2f
  addi t1, t1, -1
  bnez t1, 1b
  CHECK(1, t1, 1)          /* mtime never moved */
2:
  /* time CSR matches mtime (same clock) within a small window */
  ld a0, 0(s0)
  rdtime a1
  sub a2, a1, a0
  li gp, 2
  bltz a2, fail
  li t6, 100000
  bgeu a2, t6, fail

  /* timer interrupt: mtimecmp = now + 1000 ticks (100 us), enable MTIE and MIE, WFI */
  li s1, MTIMECMP
  ld a0, 0(s0)
  addi a0, a0, 1000
  sd a0, 0(s1)
  li t0, 0x80
  csrs mie, t0
  csrsi mstatus, 8
3:wfi
  la t5, trap_count
  ld a0, 0(t5)
  beqz a0, 3b
  csrci mstatus, 8
  LOAD_TRAP(a0, a1)
  CHECK(3, a0, 0x8000000000000007)
  /* the handler returned with MTIP still pending: mip shows it */
  csrr a0, mip
  andi a0, a0, 0x80
  CHECK(4, a0, 0x80)
  /* moving mtimecmp far away clears MTIP */
  li t0, -1
  sd t0, 0(s1)
  csrr a0, mip
  andi a0, a0, 0x80
  CHECK(5, a0, 0)
  /* software interrupt through msip */
  li t0, 0x80
  csrc mie, t0
  li t0, 0x8
  csrs mie, t0
  la t5, trap_count
  sd zero, 0(t5)
  li s2, ACLINT
  li t0, 1
  sw t0, 0(s2)
  csrsi mstatus, 8
  nop
  nop
  csrci mstatus, 8
  LOAD_TRAP(a0, a1)
  CHECK(6, a0, 0x8000000000000003)
  sw zero, 0(s2)
  csrr a0, mip
  andi a0, a0, 0x8
  CHECK(7, a0, 0)
  /* vectored mtvec: the software interrupt enters at base + 4 * 3 */
  la t0, vectors
  ori t0, t0, 1
  csrw mtvec, t0
  li t0, 0x8
  csrs mie, t0
  li t0, 1
  sw t0, 0(s2)
  csrsi mstatus, 8
  nop
  csrci mstatus, 8
  sw zero, 0(s2)
  la t5, vectored_hits
  ld a0, 0(t5)
  CHECK(8, a0, 1)
  /* an exception in vectored mode still goes to the base */
  ecall
  LOAD_TRAP(a0, a1)
  CHECK(9, a0, 11)
  la t5, vectored_hits
  ld a0, 0(t5)
  CHECK(10, a0, 1)
  RVTEST_PASS

  .align 6
  .option push
  .option norvc        /* vector entries are 4 bytes apart: no compressed jumps */
vectors:
  j trap_entry        /* 0: exceptions */
  j trap_entry
  j trap_entry
  j software_vector   /* 3: machine software interrupt */
  j trap_entry
  j trap_entry
  j trap_entry
  j trap_entry        /* 7: machine timer */
  .option pop
software_vector:
  csrw mscratch, t0
  la t0, vectored_hits
  sd t6, 8(t0)
  li t6, 1
  sd t6, 0(t0)
  ld t6, 8(t0)
  csrr t0, mscratch
  j trap_entry
RVTEST_FAIL_CODE
/* Interrupt-aware handler: for interrupts, mask the source in mie so we don't loop. */
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
.align 3
vectored_hits: .dword 0, 0
