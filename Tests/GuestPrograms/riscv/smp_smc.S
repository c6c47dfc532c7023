/* Cross-hart code modification on four harts (the tests run smp* programs with -smp 4).

   In each of 16 rounds one hart, the executor, runs three functions (so it has translated
   them) and checks their results; another hart, the writer (a different pair every round),
   then rewrites an instruction of each, and releases a flag after a FENCE; the executor
   acquires the flag, executes FENCE.I and calls the functions again, which must return the
   new values. The functions are: one on the shared code page every hart is running its
   wait loops from, one alone on its own page in .text, and one on a fresh data page per
   round that the writer first filled with code (so the writer had cached a write
   translation for that page before the executor's first fetch made it a code page).

   FENCE.I orders only the executing hart's own fetches (Unprivileged §3.1). Linux asks the
   SBI (OpenSBI) for a remote FENCE.I on the other harts; a bare-metal program has no SBI, and
   the architecturally correct pattern there is the one used here: the writer stores the
   code and then releases a flag (FENCE rw,w before the store of the flag), and the hart that
   will run the code acquires the flag (FENCE r,rw after seeing it) and executes FENCE.I
   itself before running the code.

   Why it matters for a JIT: translations are per hart, and the store that makes one stale
   happens on another hart (another host thread), possibly while the executor is inside
   generated code from the same page; the executor's FENCE.I must find the page written by
   someone else, drop exactly what it translated, and never run freed code. */
#include "test.h"
#define HARTS 4
#define ROUNDS 16
#define A0 10
#define ENC_ADDI_A0_ZERO 0x00000513
#define PAUSE .word 0x0100000f

  .option norelax
/* dst = (r * m + a) & 0x7ff: the immediate a function holds in round r */
.macro value dst, r, m, a
  li t5, \m
  mul \dst, \r, t5
  addi \dst, \dst, \a
  andi \dst, \dst, 0x7ff
.endm
/* dst = addi a0, zero, v */
.macro encode dst, v
  slli \dst, \v, 20
  li t5, ENC_ADDI_A0_ZERO
  or \dst, \dst, t5
.endm
/* wait until the word at `label` equals `reg`, then acquire */
.macro await label, reg
  la t0, \label
1:
  lw t1, 0(t0)
  beq t1, \reg, 2f
  PAUSE
  j 1b
2:
  fence r, rw
.endm
/* release: publish `reg` in the word at `label` after every earlier access */
.macro publish label, reg
  fence rw, w
  la t0, \label
  sw \reg, 0(t0)
.endm

RVTEST_BEGIN
  csrr s0, mhartid
  li s1, 0                  /* the round */
round:
  /* wait until round_no >= s1: a hart with no part in a round may see it only when it is
     over (a round cannot end without its executor and writer) */
  la t0, round_no
1:
  lw t1, 0(t0)
  bgeu t1, s1, 2f
  PAUSE
  j 1b
2:
  fence r, rw
  li t0, ROUNDS
  beq s1, t0, finish
  andi s2, s1, 3            /* executor */
  srli t0, s1, 2
  li t1, 3
  remu t0, t0, t1
  add s3, s2, t0
  addi s3, s3, 1
  andi s3, s3, 3            /* writer, never the executor */
  addi s5, s1, 1            /* the flags' value for this round */
  la s4, fresh_pages        /* this round's fresh page */
  slli t0, s1, 12
  add s4, s4, t0
  beq s0, s2, executor
  beq s0, s3, writer
next:
  mv s1, s5
  j round

finish:
  bnez s0, park
  RVTEST_PASS
park:
  wfi
  j park

executor:
  await ready, s5           /* the writer has filled the fresh page */
  fence.i
  value s6, s1, 0x1d3, 0x11
  TEST(1, a0, 0, call near_fn; sub a0, a0, s6)
  value s6, s1, 0x2a7, 0x22
  TEST(2, a0, 0, call far_fn; sub a0, a0, s6)
  value s6, s1, 5, 1
  TEST(3, a0, 0, jalr s4; sub a0, a0, s6)
  /* once more each: translated now */
  value s6, s1, 0x1d3, 0x11
  TEST(4, a0, 0, call near_fn; sub a0, a0, s6)
  value s6, s1, 5, 1
  TEST(5, a0, 0, jalr s4; sub a0, a0, s6)
  publish go, s5
  await done, s5
  fence.i
  value s6, s5, 0x1d3, 0x11
  TEST(6, a0, 0, call near_fn; sub a0, a0, s6)
  value s6, s5, 0x2a7, 0x22
  TEST(7, a0, 0, call far_fn; sub a0, a0, s6)
  value s6, s1, 7, 1000
  TEST(8, a0, 0, jalr s4; sub a0, a0, s6)
  /* and again */
  value s6, s5, 0x2a7, 0x22
  TEST(9, a0, 0, call far_fn; sub a0, a0, s6)
  value s6, s1, 7, 1000
  TEST(10, a0, 0, jalr s4; sub a0, a0, s6)
  publish round_no, s5
  j next

writer:
  /* fill the fresh page with `addi a0, zero, v; ret` */
  value t2, s1, 5, 1
  encode t3, t2
  sw t3, 0(s4)
  li t3, 0x00008067
  sw t3, 4(s4)
  publish ready, s5
  await go, s5
  /* rewrite the three functions */
  value t2, s5, 0x1d3, 0x11
  encode t3, t2
  la t4, near_fn
  sw t3, 0(t4)
  value t2, s5, 0x2a7, 0x22
  encode t3, t2
  la t4, far_fn
  sw t3, 0(t4)
  value t2, s1, 7, 1000
  encode t3, t2
  sw t3, 0(s4)
  publish done, s5
  j next

  .option push
  .option norvc
  .balign 4
near_fn:
  addi a0, zero, 0x11
  ret
  .balign 4096
far_fn:
  addi a0, zero, 0x22
  ret
  .option pop

RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 64
round_no: .word 0
  .balign 64
ready: .word 0
  .balign 64
go: .word 0
  .balign 64
done: .word 0
  .balign 4096
fresh_pages:
  .space 4096 * ROUNDS
