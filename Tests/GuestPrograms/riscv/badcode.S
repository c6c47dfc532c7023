/* Bad instruction streams end in guest traps, never in host trouble.

   Why it matters for a JIT: a translator decodes whatever bytes a guest jumps to, at any
   2-byte boundary, into blocks of any length, and must turn every undecodable, privileged or
   faulting instruction into a precise guest trap (right cause, mepc, mtval), never into a
   host crash, a hang, or a block read past the end of guest RAM.

   (a) Random code, sandboxed: 64 times, a 16 KiB buffer is filled with pseudo-random words
       (an LCG, the same on every run), FENCE.I, then the program enters it 8 times at a
       random 2-byte offset in U-mode with random registers (half of them pointing into the
       buffer). PMP lets U-mode touch only the buffer, so the random code can reach no device
       and none of this program; a machine timer interrupt bounds each run (random code may
       loop). A trap handler of its own skips each trapping instruction and, after 64 traps,
       a fetch fault (a jump out of the buffer) or the timer, returns to the program. Checked:
       every run came back, and every trap came from U-mode with an exception cause U-mode can
       raise here (fetch/load/store access faults, misaligned loads/stores, illegal
       instruction, breakpoint, ecall from U) or the timer, with mepc in the buffer for all
       but fetch faults. Which traps happen is not compared (QEMU implements extensions swemu
       does not, random code rewrites itself without FENCE.I), only that they are sane.
   (b) Entering a 32-bit instruction at its second half, where that half is a compressed
       instruction, an illegal halfword, or the first half of another 32-bit instruction
       completed by the next instruction's bytes; and jalr to an odd address (bit 0 cleared)
       that lands inside a 32-bit instruction.
   (c) Straight-line blocks of 2,000 and 3,000 instructions (32-bit, compressed, with loads
       and stores), and 1,501 with an illegal instruction in the middle: the instructions
       before it ran, mepc is exact, and the rest runs after the handler.
   (d) Fetches outside RAM: unmapped addresses, the first byte past RAM, far above RAM, and
       compressed instructions in the last bytes of RAM, which run (a block that ends exactly
       at the end of RAM must not be decoded past it). Left out: a 32-bit instruction in the
       last halfword of RAM (a fetch fault whose second half lies past RAM), because QEMU 7.2
       aborts on it (translator_access: assertion `phys_page != -1' failed). */
#include "test.h"
#define MTIMECMP 0x2004000
#define MTIME 0x200bff8
#define RAM_END 0x81000000
#define SANDBOX_SIZE 16384
#define ROUNDS 64
#define ENTRIES 8
#define TRAP_LIMIT 64
#define WATCHDOG 20000
#define A0 10
#define ENC_C_LI(rd, imm) (0x4001 | ((((imm) >> 5) & 1) << 12) | ((rd) << 7) | (((imm) & 0x1f) << 2))

  .option norelax
/* s0 = s0 * 6364136223846793005 + 1442695040888963407 (uses t5) */
.macro lcg
  li t5, 6364136223846793005
  mul s0, s0, t5
  li t5, 1442695040888963407
  add s0, s0, t5
.endm

RVTEST_BEGIN
  li t0, 1 << 13            /* mstatus.FS = initial: random FP instructions run */
  csrs mstatus, t0

  /* ---- (a) random code ---- */
  la t0, sandbox
  srli t0, t0, 2
  ori t0, t0, (SANDBOX_SIZE >> 3) - 1
  csrw pmpaddr0, t0
  li t0, 0x1f               /* NAPOT, RWX */
  csrw pmpcfg0, t0
  li s0, 0x2545f4914f6cdd1d
  li s1, 0
round:
  la t0, sandbox
  li t1, SANDBOX_SIZE / 4
1:
  lcg
  srli t2, s0, 32
  sw t2, 0(t0)
  addi t0, t0, 4
  addi t1, t1, -1
  bnez t1, 1b
  fence.i
  li s2, 0
entry:
  /* random registers: odd ones point into the sandbox */
  la t0, sandbox_regs
  li t1, 1
1:
  lcg
  srli t2, s0, 16
  andi t3, t1, 1
  beqz t3, 2f
  li t3, SANDBOX_SIZE - 8
  and t2, t2, t3
  la t3, sandbox
  add t2, t2, t3
2:
  slli t3, t1, 3
  add t3, t3, t0
  sd t2, 0(t3)
  addi t1, t1, 1
  li t3, 32
  bne t1, t3, 1b
  lcg
  srli a0, s0, 20
  li t0, SANDBOX_SIZE - 2
  and a0, a0, t0
  la t0, sandbox
  add a0, a0, t0
  jal ra, run_sandboxed
  addi s2, s2, 1
  li t0, ENTRIES
  bne s2, t0, entry
  addi s1, s1, 1
  li t0, ROUNDS
  bne s1, t0, round
  csrw pmpcfg0, zero
  la s3, sandbox_state
  ld a0, 32(s3)             /* runs that came back */
  CHECK(1, a0, ROUNDS * ENTRIES)
  ld a0, 40(s3)             /* a bad trap: its mcause (+1), 0 if none */
  CHECK(2, a0, 0)
  ld a0, 16(s3)             /* traps taken */
  li gp, 3
  li t6, ROUNDS * ENTRIES
  bltu a0, t6, fail

  /* ---- (b) into the middle of instructions ---- */
  li s1, 3
1:
  li s10, 1000
  TEST(10, a0, 2105, call mid)
  la t0, mid
  addi t0, t0, 2
  TEST(11, a0, 7, jalr t0)
  /* jalr clears bit 0: mid + 3 runs mid + 2 */
  la t0, mid
  addi t0, t0, 3
  TEST(12, a0, 7, jalr t0)
  /* the same 32-bit instruction, entered at either half */
  li t1, 1000
  li a0, 5
  call span
  CHECK(13, a2, 1089)
  CHECK(14, a3, 85)
  CHECK(15, a0, 5)
  li t1, 1000
  li a0, 5
  li a2, 0
  li a3, 0
  la t0, span
  addi t0, t0, 2
  jalr t0
  CHECK(16, a1, 1105)
  CHECK(17, a0, 6)
  CHECK(18, a2, 0)
  CHECK(19, a3, 0)
  /* an illegal second half: mcause 2 at mid + 2, then the handler goes on after it */
  li a0, 3
  TEST(20, a0, 0, call ill_mid)
  la t5, trap_cause
  ld s2, 24(t5)
  li a0, 3
  la t0, ill_mid
  addi t0, t0, 2
  TEST(21, a0, 3, jalr t0)
  LOAD_TRAP(a0, a1)
  CHECK(22, a0, 2)
  CHECK(23, a1, 0)
  la t5, trap_cause
  ld a0, 16(t5)
  la t0, ill_mid
  addi t0, t0, 2
  li gp, 24
  bne a0, t0, fail
  ld a0, 24(t5)
  sub a0, a0, s2
  CHECK(25, a0, 1)
  /* an odd target for a whole function */
  la t0, mid
  addi t0, t0, 1
  li s10, 1
  TEST(26, a0, 1106, jalr t0)
  addi s1, s1, -1
  bnez s1, 1b

  /* ---- (c) long blocks ---- */
  TEST(30, a1, 1501500, call long_block)
  CHECK(31, a0, 3000)
  TEST(32, a1, 1501500, call long_block_c)
  CHECK(33, a0, 3000)
  la s2, counter
  sd zero, 0(s2)
  TEST(34, a0, 1000, call long_memory)
  ld a0, 0(s2)
  CHECK(35, a0, 1000)
  li a0, 0
  TEST(36, a0, 1500, call long_trap)
  LOAD_TRAP(a0, a1)
  CHECK(37, a0, 2)
  CHECK(38, a1, 0xffffffff)
  la t5, trap_cause
  ld a0, 16(t5)
  la t0, long_trap_insn
  li gp, 39
  bne a0, t0, fail
  /* again, translated now */
  li a0, 0
  TEST(40, a0, 1500, call long_trap)

  /* ---- (d) outside RAM ---- */
  li s1, 2
1:
  li t0, 0x00200000
  jalr t0
  LOAD_TRAP(a0, a1)
  CHECK(50, a0, 1)
  CHECK(51, a1, 0x00200000)
  li t0, RAM_END
  jalr t0
  LOAD_TRAP(a0, a1)
  CHECK(52, a0, 1)
  CHECK(53, a1, RAM_END)
  li t0, 0x4000000000
  jalr t0
  LOAD_TRAP(a0, a1)
  CHECK(54, a0, 1)
  CHECK(55, a1, 0x4000000000)
  /* c.li a0, 9; c.jr ra in RAM's last four bytes */
  li t0, RAM_END - 4
  li t1, ENC_C_LI(A0, 9) | (0x8082 << 16)
  sw t1, 0(t0)
  fence.i
  li a0, 0
  TEST(56, a0, 9, jalr t0)
  /* the last halfword alone: c.jr ra */
  li t0, RAM_END - 2
  li a0, 4
  TEST(57, a0, 4, jalr t0)
  addi s1, s1, -1
  bnez s1, 1b

  RVTEST_PASS

/* run_sandboxed: enters the sandbox at a0 in U-mode with the registers in sandbox_regs;
   comes back here (to ra, with ra, sp, gp, tp, s0-s11 restored) when sandbox_trap gives up */
run_sandboxed:
  la t0, sandbox_context
  sd ra, 0(t0)
  sd sp, 8(t0)
  sd gp, 16(t0)
  sd tp, 24(t0)
  .irp r, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
  sd s\r, 32 + \r * 8(t0)
  .endr
  la t0, sandbox_state
  sd zero, 24(t0)           /* traps in this run */
  csrw mscratch, t0
  la t0, sandbox_trap
  csrw mtvec, t0
  li t0, MTIME
  ld t1, 0(t0)
  li t2, WATCHDOG
  add t1, t1, t2
  li t0, MTIMECMP
  sd t1, 0(t0)
  li t0, 0x80               /* MTIE: taken in U-mode whatever mstatus.MIE is */
  csrs mie, t0
  li t0, 3 << 11            /* MPP = U */
  csrc mstatus, t0
  csrw mepc, a0
  la x31, sandbox_regs
  .irp r, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
  ld x\r, \r * 8(x31)
  .endr
  ld x31, 31 * 8(x31)
  mret

/* sandbox_state: 0 t0, 8 t1, 16 traps in all, 24 traps this run, 32 runs back,
   40 first bad trap's mcause + 1, 48 its mepc, 56 its mstatus */
  .balign 4
sandbox_trap:
  csrrw t6, mscratch, t6
  sd t0, 0(t6)
  sd t1, 8(t6)
  ld t0, 16(t6)
  addi t0, t0, 1
  sd t0, 16(t6)
  ld t0, 24(t6)
  addi t0, t0, 1
  sd t0, 24(t6)
  csrr t0, mstatus          /* from U-mode, always */
  srli t0, t0, 11
  andi t0, t0, 3
  bnez t0, sandbox_bad
  csrr t0, mcause
  bltz t0, 3f
  /* exceptions U-mode can raise here: 1-8 */
  li t1, 9
  bgeu t0, t1, sandbox_bad
  beqz t0, sandbox_bad
  li t1, 1
  beq t0, t1, sandbox_done  /* a fetch fault: out of the sandbox */
  csrr t0, mepc             /* others: in the sandbox */
  la t1, sandbox
  sub t0, t0, t1
  li t1, SANDBOX_SIZE
  bgeu t0, t1, sandbox_bad
  ld t0, 24(t6)
  li t1, TRAP_LIMIT
  bgeu t0, t1, sandbox_done
  /* skip the trapping instruction */
  csrr t0, mepc
  lhu t1, 0(t0)
  andi t1, t1, 3
  addi t0, t0, 2
  addi t1, t1, -3
  bnez t1, 1f
  addi t0, t0, 2
1:
  csrw mepc, t0
  ld t0, 0(t6)
  ld t1, 8(t6)
  csrrw t6, mscratch, t6
  mret
3:
  /* an interrupt: the machine timer */
  li t1, 1
  slli t1, t1, 63
  addi t1, t1, 7
  beq t0, t1, sandbox_done
sandbox_bad:
  ld t0, 40(t6)
  bnez t0, sandbox_done
  csrr t0, mcause
  addi t0, t0, 1
  sd t0, 40(t6)
  csrr t0, mepc
  sd t0, 48(t6)
  csrr t0, mstatus
  sd t0, 56(t6)
sandbox_done:
  li t0, 0x80
  csrc mie, t0
  li t0, MTIMECMP
  li t1, -1
  sd t1, 0(t0)
  ld t0, 32(t6)
  addi t0, t0, 1
  sd t0, 32(t6)
  la t0, trap_entry
  csrw mtvec, t0
  li t0, 3 << 11            /* MPP = M, as it was */
  csrs mstatus, t0
  la t0, sandbox_context
  ld ra, 0(t0)
  ld sp, 8(t0)
  ld gp, 16(t0)
  ld tp, 24(t0)
  .irp r, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
  ld s\r, 32 + \r * 8(t0)
  .endr
  ret

  .option push
  .option norvc
/* mid: addi a0, s10, 1105 whose upper half is c.li a0, 7; then ret */
  .balign 4
mid:
  .half 0x0513 | (0 << 15)
  .half ENC_C_LI(A0, 7)
  ret
/* ill_mid: addi a0, zero, 0, whose upper half 0x0000 is illegal; then ret */
ill_mid:
  addi a0, zero, 0
  ret
/* span: addi a2, t1, 89; addi a3, a0, 80; ret. Entered at span + 2: addi a1, t1, 105
   (the first's upper half and the second's lower half), then c.addi a0, 1 (the second's
   upper half), then ret. */
span:
  addi a2, t1, 89
  addi a3, a0, 80
  ret

/* 1,000 x (addi a0, a0, 3; add a1, a1, a0): a0 = 3000, a1 = 3 * 500500 */
long_block:
  li a0, 0
  li a1, 0
  .rept 1000
  addi a0, a0, 3
  add a1, a1, a0
  .endr
  ret
  .option pop
/* the same, compressed */
long_block_c:
  li a0, 0
  li a1, 0
  .rept 1000
  c.addi a0, 3
  c.add a1, a0
  .endr
  ret
/* 1,000 x (ld, addi, sd, addi a0) on counter (s2) */
long_memory:
  li a0, 0
  .rept 1000
  ld t0, 0(s2)
  addi t0, t0, 1
  sd t0, 0(s2)
  addi a0, a0, 1
  .endr
  ret
/* 750 x addi a0, a0, 1; an illegal instruction; 750 more */
  .option push
  .option norvc
long_trap:
  .rept 750
  addi a0, a0, 1
  .endr
long_trap_insn:
  .word 0xffffffff
  .rept 750
  addi a0, a0, 1
  .endr
  ret
  .option pop

RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 8
sandbox_state: .space 64
sandbox_context: .space 128
sandbox_regs: .space 256
counter: .dword 0
  .balign SANDBOX_SIZE
sandbox: .space SANDBOX_SIZE
