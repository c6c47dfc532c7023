/* Self-modifying code on one hart (Zifencei, Unprivileged §3.1): after a store to
   instruction memory, FENCE.I makes the hart's later fetches see it. Every check runs after
   the FENCE.I, so it holds on any conforming hart (QEMU's TCG sees a store to code at once,
   the interpreter and the JIT only at FENCE.I); nothing here depends on what a hart fetches
   between the store and the FENCE.I.

   Why it matters for a JIT: translated host code is a cache of guest instruction bytes, kept
   per physical code page, and FENCE.I drops only the pages written since they were
   translated. So every way a hart can write memory must be noticed on code pages (stores of
   every width, FP stores, compressed stores, AMOs, SC), including when the hart had cached a
   write translation for the page before it became code; FENCE.I must end the block it sits
   in (the next instruction may be the one just written); an instruction whose two halves lie
   on two pages must follow writes to either page; and data stores to a page that also holds
   a running loop must neither corrupt that loop nor change what it computes.

   (a) the immediate of an `addi` in a called function rewritten 200 times with `sw`, then
       FENCE.I and a call that must return the new value: in a function on the caller's own
       page, on a page of its own, and in a buffer written at run time (with a data store to
       that page between FENCE.I and the call, so a write TLB entry cached while the page is
       not code must be dropped when it becomes code again); an instruction right after the
       FENCE.I patched just before it, in the same straight-line run;
   (b) 16-bit stores over compressed instructions, and 32-bit stores that turn two compressed
       instructions into one 32-bit instruction and back;
   (c) a hot loop (60,000 iterations in all) whose load/store target sits on the loop's 4 KiB
       page, right after the loop's last block;
   (d) a 32-bit instruction at offset 0xffe of a page (its halves on two pages), entered
       both from the page before and directly, in a function that crosses the page boundary,
       patched on either page;
   (e) code patched by amoswap.w (its old value checked), amoadd.w, amoxor.w, amoor.w, LR/SC,
       sd over two instructions, sb, fsw, fsd and the compressed c.sw/c.sd;
   (f) a function on another page reached by a direct jal (an exit a JIT may chain), and a
       1,002-instruction function rewritten and rerun 1,000 times: a million instructions
       translated, several MiB of host code, so a JIT with a small code buffer (swemu's
       -accel tcg,jit=on,tb-size=1) fills it and flushes it between rewrites. */
#include "test.h"

#define A0 10
#define ENC_ADDI(rd, rs1, imm) ((((imm) & 0xfff) << 20) | ((rs1) << 15) | ((rd) << 7) | 0x13)
#define ENC_XORI(rd, rs1, imm) ((((imm) & 0xfff) << 20) | ((rs1) << 15) | (4 << 12) | ((rd) << 7) | 0x13)
#define ENC_C_LI(rd, imm) (0x4001 | ((((imm) >> 5) & 1) << 12) | ((rd) << 7) | (((imm) & 0x1f) << 2))
#define ENC_C_ADDI(rd, imm) (0x0001 | ((((imm) >> 5) & 1) << 12) | ((rd) << 7) | (((imm) & 0x1f) << 2))
#define ENC_RET 0x00008067
#define A_ITERATIONS 200
#define BIG_ITERATIONS 1000

  .option norelax
RVTEST_BEGIN
  /* enable the FPU (mstatus.FS = initial) for the fsw/fsd patches of (e) */
  li t0, 1 << 13
  csrs mstatus, t0

  /* ---- (a) ---- */
  /* a function on this page: the caller's own block is dropped by each FENCE.I too */
  la s3, near_site
  la s4, near_fn
  la s6, near_scratch
  li s5, 10
  jal s11, smc_loop
  /* a function alone on its page */
  la s3, far_site
  la s4, far_fn
  la s6, far_scratch
  li s5, 20
  jal s11, smc_loop
  /* a function written at run time into a data buffer, then executed */
  la s4, code_buf
  li t0, ENC_ADDI(A0, 0, 0)
  sw t0, 0(s4)
  li t0, ENC_ADDI(A0, A0, 1)
  sw t0, 4(s4)
  li t0, ENC_RET
  sw t0, 8(s4)
  fence.i
  mv s3, s4
  li s6, 2048
  add s6, s6, s4
  li s5, 30
  jal s11, smc_loop

  /* the instruction after FENCE.I, written just before it */
  li s0, 0
  li s1, A_ITERATIONS
1:
  li t0, 0x2f3
  mul t0, s0, t0
  slli t0, t0, 52
  srai s2, t0, 52           /* the value, sign-extended */
  srli t0, t0, 32           /* the 12-bit field at bits 31:20 */
  li t1, ENC_ADDI(A0, 0, 0)
  or t0, t0, t1
  la t1, inline_site
  sw t0, 0(t1)
  fence.i
  .option push
  .option norvc
inline_site:
  addi a0, zero, 0
  .option pop
  li gp, 40
  bne a0, s2, fail
  addi s0, s0, 1
  bne s0, s1, 1b

  /* ---- (b) compressed ---- */
  /* c.li a0, v rewritten with sh, for every v in -32..31 (c.addi a0, 2 follows) */
  la s3, cfn
  li s0, -32
1:
  call cfn                  /* translated with the previous value */
  li gp, 50
  lh t0, 0(s3)              /* previous encoding, to compute what the call returned */
  srli t1, t0, 2
  andi t1, t1, 0x1f
  srli t2, t0, 12
  andi t2, t2, 1
  slli t2, t2, 5
  or t1, t1, t2
  slli t1, t1, 58
  srai t1, t1, 58
  addi t1, t1, 2
  bne a0, t1, fail
  /* c.li a0, s0 */
  andi t0, s0, 0x1f
  slli t0, t0, 2
  srli t1, s0, 5
  andi t1, t1, 1
  slli t1, t1, 12
  or t0, t0, t1
  li t1, 0x4001 | (A0 << 7)
  or t0, t0, t1
  sh t0, 0(s3)
  fence.i
  call cfn
  addi t1, s0, 2
  li gp, 51
  bne a0, t1, fail
  addi s0, s0, 1
  li t0, 32
  bne s0, t0, 1b
  /* sw over both halves: two compressed instructions, then one 32-bit, then two again */
  li t0, ENC_C_LI(A0, -7) | (ENC_C_ADDI(A0, 30) << 16)
  sw t0, 0(s3)
  fence.i
  TEST(52, a0, 23, call cfn)
  li t0, ENC_ADDI(A0, 0, 1234)
  sw t0, 0(s3)
  fence.i
  TEST(53, a0, 1234, call cfn)
  TEST(54, a0, 1234, call cfn)
  li t0, ENC_C_LI(A0, 17) | (ENC_C_ADDI(A0, -20) << 16)
  sw t0, 0(s3)
  fence.i
  TEST(55, a0, -3, call cfn)
  li t0, ENC_ADDI(A0, 0, -1000)
  sw t0, 0(s3)
  fence.i
  TEST(56, a0, -1000, call cfn)
  /* the second half alone: c.addi becomes c.li, the first instruction's effect is lost */
  li t0, ENC_C_LI(A0, 3) | (ENC_C_ADDI(A0, 4) << 16)
  sw t0, 0(s3)
  fence.i
  TEST(57, a0, 7, call cfn)
  li t0, ENC_C_LI(A0, 9)
  sh t0, 2(s3)
  fence.i
  TEST(58, a0, 9, call cfn)

  /* ---- (c) data on the page of a hot loop ---- */
  la s0, hot_page
  lw s1, 0(s0)              /* the loop's first instruction */
  TEST(60, a0, 60000, call hot_loop)
  /* again without FENCE.I: the code bytes never changed */
  TEST(61, a0, 120000, call hot_loop)
  fence.i
  TEST(62, a0, 180000, call hot_loop)
  lw t0, 0(s0)
  li gp, 63
  bne t0, s1, fail
  la t0, hot_var
  ld a0, 0(t0)
  CHECK(64, a0, 180000)
  lbu a0, 8(t0)             /* the sb's last value: the low byte of 1 */
  CHECK(65, a0, 1)

  /* ---- (d) across a page boundary ---- */
  /* 1+2+4+8+16+32, called several times */
  TEST(70, a0, 63, call cross_fn)
  TEST(71, a0, 63, call cross_fn)
  TEST(72, a0, 63, call cross_fn)
  /* entered at the straddling instruction itself */
  li a0, 100
  TEST(73, a0, 156, call straddle_insn)
  li a0, 100
  TEST(74, a0, 156, call straddle_insn)
  /* the straddling instruction's immediate (its upper half, on the second page) */
  la s3, straddle_insn
  li s0, 1
1:
  li t0, 3
  mul t1, s0, t0
  slli t1, t1, 4
  ori t1, t1, A0 >> 1       /* upper half of addi a0, a0, imm: imm[11:0] << 4 | rs1[4:1] */
  sh t1, 2(s3)
  fence.i
  call cross_fn
  li t0, 3
  mul t1, s0, t0
  addi t1, t1, 63 - 8
  li gp, 75
  bne a0, t1, fail
  li a0, 1000
  call straddle_insn
  li t0, 3
  mul t1, s0, t0
  addi t1, t1, 1000 + 16 + 32
  li gp, 76
  bne a0, t1, fail
  addi s0, s0, 1
  li t0, 40
  bne s0, t0, 1b
  /* imm 5, then its lower half (on the first page): addi becomes xori (7 ^ 5 = 2) */
  li t0, (5 << 4) | (A0 >> 1)
  sh t0, 2(s3)
  fence.i
  TEST(77, a0, 1 + 2 + 4 + 5 + 16 + 32, call cross_fn)
  li t0, ENC_XORI(A0, A0, 0) & 0xffff
  sh t0, 0(s3)
  fence.i
  TEST(78, a0, (7 ^ 5) + 16 + 32, call cross_fn)
  li a0, 0x1f
  TEST(79, a0, (0x1f ^ 5) + 16 + 32, call straddle_insn)
  li t0, ENC_ADDI(A0, A0, 0) & 0xffff
  sh t0, 0(s3)
  fence.i
  TEST(80, a0, 1 + 2 + 4 + 5 + 16 + 32, call cross_fn)
  /* one write on each page, one FENCE.I: the first instruction (page 1, sw) and the last
     addi (page 2, sw) */
  la t1, cross_fn
  li t0, ENC_ADDI(A0, 0, 100)
  sw t0, 0(t1)
  la t1, cross_last
  li t0, ENC_ADDI(A0, A0, 200)
  sw t0, 0(t1)
  fence.i
  TEST(81, a0, 100 + 2 + 4 + 5 + 16 + 200, call cross_fn)
  /* the compressed instructions on either side of the boundary (sh) */
  la t1, cross_c1
  li t0, ENC_C_ADDI(A0, -4)
  sh t0, 0(t1)
  fence.i
  TEST(82, a0, 100 + 2 - 4 + 5 + 16 + 200, call cross_fn)
  la t1, cross_c2
  li t0, ENC_C_ADDI(A0, 31)
  sh t0, 0(t1)
  fence.i
  TEST(83, a0, 100 + 2 - 4 + 5 + 31 + 200, call cross_fn)
  li a0, 0
  TEST(84, a0, 5 + 31 + 200, call straddle_insn)

  /* ---- (e) atomics and other stores ---- */
  la s3, amo_fn
  TEST(90, a0, 5, call amo_fn)
  /* amoswap.w: the old instruction comes back, the new one runs */
  li t0, ENC_ADDI(A0, 0, 77)
  amoswap.w t1, t0, (s3)
  li t2, ENC_ADDI(A0, 0, 5)
  li gp, 91
  bne t1, t2, fail
  fence.i
  TEST(92, a0, 77, call amo_fn)
  /* amoadd.w of 1 << 20 adds 1 to the immediate: 50 times, each run checked */
  li s0, 78
1:
  li t0, 1 << 20
  amoadd.w zero, t0, (s3)
  fence.i
  call amo_fn
  li gp, 93
  bne a0, s0, fail
  addi s0, s0, 1
  li t0, 128
  bne s0, t0, 1b
  /* amoxor.w flips immediate bit 10: 127 ^ 1024 */
  li t0, 1 << 30
  amoxor.w zero, t0, (s3)
  fence.i
  TEST(94, a0, 1151, call amo_fn)
  /* amoor.w with the .aqrl bits sets immediate bit 8 */
  li t0, 1 << 28
  amoor.w.aqrl zero, t0, (s3)
  fence.i
  TEST(95, a0, 1151 | 256, call amo_fn)
  /* LR/SC */
1:
  lr.w t1, (s3)
  li t0, ENC_ADDI(A0, 0, -321)
  sc.w t2, t0, (s3)
  bnez t2, 1b
  fence.i
  TEST(96, a0, -321, call amo_fn)
  /* sd over two instructions: a new first instruction and a new second one */
  li t0, ENC_ADDI(A0, 0, 40) | (ENC_ADDI(A0, A0, 2) << 32)
  sd t0, 0(s3)
  fence.i
  TEST(97, a0, 42, call amo_fn)
  /* sb of one byte: bits 31:24 are imm[11:4]; 40 = 0x28 becomes 0x58 = 88 */
  li t0, 0x05
  sb t0, 3(s3)
  fence.i
  TEST(98, a0, 90, call amo_fn)
  /* fsw, fsd */
  li t0, ENC_ADDI(A0, 0, 600)
  fmv.w.x ft0, t0
  fsw ft0, 0(s3)
  fence.i
  TEST(99, a0, 602, call amo_fn)
  li t0, ENC_ADDI(A0, 0, 700) | (ENC_ADDI(A0, A0, 3) << 32)
  fmv.d.x ft1, t0
  fsd ft1, 0(s3)
  fence.i
  TEST(100, a0, 703, call amo_fn)
  /* c.sw and c.sd (a0..a5, s0, s1 as registers) */
  mv a1, s3
  li a2, ENC_ADDI(A0, 0, -50)
  c.sw a2, 0(a1)
  fence.i
  TEST(101, a0, -47, call amo_fn)
  li a2, ENC_ADDI(A0, 0, 10) | (ENC_ADDI(A0, A0, 9) << 32)
  mv a1, s3
  c.sd a2, 0(a1)
  fence.i
  TEST(102, a0, 19, call amo_fn)

  /* ---- (f) direct jumps and a full code buffer ---- */
  /* jal (a direct call, whose exit a JIT may chain) into far_fn, rewritten between calls */
  la s3, far_site
  li s0, 1
1:
  li t0, 11
  mul s2, s0, t0
  slli t0, s2, 20
  li t1, ENC_ADDI(A0, 0, 0)
  or t0, t0, t1
  sw t0, 0(s3)
  fence.i
  jal ra, far_fn
  addi t1, s2, 1
  li gp, 110
  bne a0, t1, fail
  jal ra, far_fn
  li gp, 111
  bne a0, t1, fail
  addi s0, s0, 1
  li t0, 100
  bne s0, t0, 1b
  /* a function of 1,002 instructions rewritten and run BIG_ITERATIONS times: more code
     translated than a small JIT code buffer holds, so it is flushed between rewrites */
  la s3, big_fn
  li s0, 0
1:
  andi s2, s0, 0x7ff
  slli t0, s2, 20
  li t1, ENC_ADDI(A0, 0, 0)
  or t0, t0, t1
  sw t0, 0(s3)
  fence.i
  jal ra, big_fn
  addi t1, s2, 1000
  li gp, 112
  bne a0, t1, fail
  addi s0, s0, 1
  li t0, BIG_ITERATIONS
  bne s0, t0, 1b

  RVTEST_PASS

/* smc_loop: the (a) loop. s3: the `addi a0, zero, imm` to rewrite, s4: the function
   (addi a0, zero, imm; addi a0, a0, 1; ret), s5: first check number, s6: a word on the
   function's page written between FENCE.I and the call. Returns through s11. */
smc_loop:
  jalr s4
  addi gp, s5, 0
  lw t1, 0(s3)
  srai t1, t1, 20
  addi t1, t1, 1
  bne a0, t1, fail
  li s0, 1
  li s1, A_ITERATIONS + 1
1:
  /* the value, v = s0 * 0x9d + 0x35 in 12 bits, sign-extended in s2, field in t0 */
  li t0, 0x9d
  mul t0, s0, t0
  addi t0, t0, 0x35
  slli t0, t0, 52
  srai s2, t0, 52
  srli t0, t0, 32
  li t1, ENC_ADDI(A0, 0, 0)
  or t0, t0, t1
  sw t0, 0(s3)
  fence.i
  sw s0, 0(s6)
  jalr s4
  addi t1, s2, 1
  addi gp, s5, 1
  bne a0, t1, fail
  /* again, translated now */
  jalr s4
  addi gp, s5, 2
  bne a0, t1, fail
  lw t0, 0(s6)
  addi gp, s5, 3
  bne t0, s0, fail
  addi s0, s0, 1
  bne s0, s1, 1b
  jr s11

  .option push
  .option norvc
  .balign 4
near_fn:
near_site:
  addi a0, zero, 0
  addi a0, a0, 1
  ret
near_scratch:
  .word 0
  .option pop

/* (b): c.li a0, 1; c.addi a0, 2; ret, 4-byte aligned */
  .balign 4
cfn:
  .half ENC_C_LI(A0, 1)
  .half ENC_C_ADDI(A0, 2)
  ret

/* (e): addi a0, zero, 5; addi a0, a0, 0; ret */
  .option push
  .option norvc
  .balign 8
amo_fn:
  addi a0, zero, 5
  addi a0, a0, 0
  ret
  .option pop

/* (c): 20,000 iterations of `hot_var += 3` (and a byte store) with hot_var on the loop's
   page, right after the loop's last block */
  .balign 4096
hot_page:
hot_loop:
  la t0, hot_var
  li t1, 20000
1:
  ld t2, 0(t0)
  addi t2, t2, 3
  sd t2, 0(t0)
  sb t1, 8(t0)
  addi t1, t1, -1
  bnez t1, 1b
  j 2f
  .balign 8
hot_var:
  .dword 0, 0
2:
  ld a0, 0(t0)
  ret

/* (f): addi a0, zero, imm; 1,000 x addi a0, a0, 1; ret */
  .balign 4096
  .option push
  .option norvc
big_fn:
  addi a0, zero, 0
  .rept 1000
  addi a0, a0, 1
  .endr
  ret
  .option pop

/* (a): a function alone on its page */
  .balign 4096
  .option push
  .option norvc
far_fn:
far_site:
  addi a0, zero, 0
  addi a0, a0, 1
  ret
  .option pop
  .balign 64
far_scratch:
  .word 0

/* (d): a function that crosses a page boundary B, with a 32-bit instruction at B - 2:
     B-12 addi a0, zero, 1   B-8 addi a0, a0, 2   B-4 c.addi a0, 4
     B-2  addi a0, a0, 8 (straddles)   B+2 c.addi a0, 16   B+4 addi a0, a0, 32   B+8 ret */
  .balign 4096
cross_page:
  .skip 4096 - 12
  .option push
  .option norvc
cross_fn:
  addi a0, zero, 1
  addi a0, a0, 2
cross_c1:
  .half ENC_C_ADDI(A0, 4)
straddle_insn:
  addi a0, a0, 8
cross_c2:
  .half ENC_C_ADDI(A0, 16)
cross_last:
  addi a0, a0, 32
  ret
  .option pop
  .if (straddle_insn - cross_page) != 0xffe
  .error "straddle_insn is not at offset 0xffe"
  .endif

RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 4096
code_buf:
  .space 4096
