/* migrate_counter: a guest that shows whether a migrated, snapshotted or stopped-and-continued
   machine goes on exactly where it was.

   Hart 0 prints "count N" (decimal, N = 1, 2, 3, ...) on the UART every 10 ms of guest time
   (INTERVAL mtime ticks at the board's 10 MHz timebase) until it has printed "count LIMIT";
   then it prints "migrate_counter done" and powers off with exit 0 through the SiFive test
   device. Between two counts it sleeps in WFI until its ACLINT timer (mtimecmp, MTIE) fires
   and the interrupt is taken: it never polls mtime to wait, so a restored machine whose timer
   state did not travel (mtime offset, mtimecmp, pending MTIP) stops printing (QEMU 7.2's
   migration does exactly that: its destination prints nothing more).
   Schedule: count N is due at start + N * 10 ms; a late count catches up at once (its timer
   fires immediately), unless it is JUMP_MAX (0.5 s) late: then the schedule restarts from now.

   Checks, each before printing count N:
   - the RAM buffer (BUF_BYTES = 4 MiB: 1024 pages, one 8-byte word every STRIDE = 64 bytes,
     64 in each page) still holds the pattern written after count N-1: the word at address A
     == A ^ K(N-1), K(n) = (n + 1) * PATTERN0. Every such word of the whole buffer is compared
     (a checksum that also says where the first difference is); then, after printing count N,
     all of them are rewritten with K(N), so every page is dirtied every 10 ms. The check comes
     first after waking, so what changed while the guest slept (where a migration or snapshot
     most likely catches it) is what gets checked. A difference prints
     "BAD checksum at count N" and "  word 0x.. holds 0x.. expected 0x..", and powers off
     with code 1 (test device 0x3333 | 1 << 16; swemu and QEMU exit 1).
     STRIDE 8 checks every word; it costs 8 times as much (too slow for 10 ms on the
     interpreter and, under load, on a debug build's JIT).
   - the count kept in register s1 equals the one kept in memory (count_mem); otherwise
     "BAD state at count N" and "  register R memory M", code 2.
   - mtime moved by at most JUMP_MAX (0.5 s) since the previous count, in either direction
     (the difference is compared unsigned): otherwise "clock jumped" (not fatal).
   - with -smp 2, hart 1 made progress within the last STALL_MAX (0.5 s) of guest time:
     otherwise "hart1 stalled at count N" (not fatal, repeated every 0.5 s while stalled).
   An unexpected trap prints "BAD trap mcause 0x.. mepc 0x.. hart H" and powers off with code 4.

   With -smp 2 hart 1 runs a loop of its own every 10 ms, also sleeping in WFI on its own timer
   (hart 1's mtimecmp): it checks and rewrites a second 4 MiB buffer (pattern
   K1(n) = (n + 1) * PATTERN1) and cross-checks its register and memory iteration counts; on a
   difference it prints "hart1 BAD checksum at iteration N" or "hart1 BAD state at iteration N"
   and powers off with code 3. It prints nothing else. Harts 2 and up park in WFI.

   LIMIT, first found: "limit=N" in the device tree's bootargs (-append "limit=N"); with RAM of
   16 MiB or less, SELFTEST_LIMIT; else the 8-byte global `migrate_limit` (`.equ LIMIT`,
   1000000, patchable in the ELF). SELF-TEST MODE: BareMetalTests runs every program in this
   directory on 16 MiB of RAM and one hart, on the interpreter too, and expects exit 0 and
   QEMU's exact output (qemuAgrees). So with no RAM at SELFTEST_PROBE (0x81000000: a load
   access fault) the program counts to SELFTEST_LIMIT (50) over a 64 KiB buffer. Run it with
   -m 32M or more for the real thing.

   Output, one line each: "migrate_counter start limit L" once, then "count 1" ... "count L",
   then "migrate_counter done". Lines from the two harts never interleave (a UART lock); after
   a fatal line the other hart may still print a line before the machine is off.

   Build with -DMIGRATE_CORRUPT_AT=n to flip one bit of hart 0's buffer after count n (and
   -DMIGRATE_CORRUPT_HART1_AT=n for hart 1's after iteration n): the run must then end with
   "BAD checksum at count n+1" (or "hart1 BAD checksum at iteration n+1"). */
#include "test.h"

#define MTIME    0x200bff8
#define MTIMECMP 0x2004000            /* hart h: MTIMECMP + 8 * h */

.equ LIMIT, 1000000                   /* counts printed before the program passes */
.equ SELFTEST_LIMIT, 50               /* with RAM of 16 MiB or less (BareMetalTests) */
.equ SELFTEST_BUF_BYTES, 64 << 10     /* ... where the interpreter of a debug build runs it */
.equ SELFTEST_PROBE, 0x81000000       /* RAM here means more than 16 MiB */
.equ INTERVAL, 100000                 /* 10 ms at 10 MHz */
.equ JUMP_MAX, 5000000                /* 0.5 s */
.equ STALL_MAX, 5000000               /* 0.5 s */
.equ BUF_BYTES, 4 << 20
.equ HART1_BUF_BYTES, 4 << 20
.equ STRIDE, 64                       /* bytes from one checked word to the next: 8 = every word */
.equ PATTERN0, 0x9e3779b97f4a7c15
.equ PATTERN1, 0xc2b2ae3d27d4eb4f
.equ FAIL_CHECKSUM, 1
.equ FAIL_STATE, 2
.equ FAIL_HART1, 3
.equ FAIL_TRAP, 4

/* The per-hart trap frame (mscratch points to it). */
.equ F_T0, 0
.equ F_T1, 8
.equ F_TIMER, 16                      /* set by the handler when the timer interrupt was taken */
.equ F_PROBING, 24                    /* a load access fault is expected (the RAM probe) */
.equ F_FAULTED, 32                    /* ... and happened */
.equ F_STACK, 40                      /* this hart's stack top */
.equ FRAME_SIZE, 64
.equ STACK_SIZE, 4096

  .section .text.init
  .globl _start
_start:
  csrw mie, zero
  csrci mstatus, 8
  la t0, trap_entry
  csrw mtvec, t0
  csrr tp, mhartid
  li t0, 2
  bgeu tp, t0, park
  /* this hart's frame and stack */
  la t0, frames
  slli t1, tp, 6                      /* FRAME_SIZE */
  add t0, t0, t1
  la sp, stacks
  addi t1, tp, 1
  slli t1, t1, 12                     /* STACK_SIZE */
  add sp, sp, t1
  sd sp, F_STACK(t0)
  csrw mscratch, t0
  /* this hart's timer off, then only the machine timer interrupt enabled */
  slli t1, tp, 3
  li t2, MTIMECMP
  add t1, t1, t2
  li t2, -1
  sd t2, 0(t1)
  li t0, 0x80                         /* MTIE */
  csrw mie, t0
  bnez tp, hart1

/* ---------------------------------------------------------------- hart 0 */
hart0:
  mv a0, a1                           /* the device tree (a1 at entry) */
  call bootargs_limit
  mv s4, a0
  /* RAM probe: a load access fault at SELFTEST_PROBE means 16 MiB or less */
  csrr s0, mscratch
  li t0, 1
  sd t0, F_PROBING(s0)
  li t0, SELFTEST_PROBE
  .option push
  .option norvc                       /* the handler skips 4 bytes */
  ld t1, 0(t0)
  .option pop
  sd zero, F_PROBING(s0)
  ld t0, F_FAULTED(s0)                /* s4: the last count: limit=N, else ... */
  bnez s4, 1f
  la t1, migrate_limit
  ld s4, 0(t1)
  beqz t0, 1f
  li s4, SELFTEST_LIMIT
1:la a0, start_text
  mv a1, s4
  call say

  li s1, 0                            /* s1: the count, in a register */
  la t0, count_mem
  sd zero, 0(t0)                      /* ... and in memory */
  la s5, buffer0                      /* s5, s6: the buffer */
  li t0, BUF_BYTES
  ld t1, F_FAULTED(s0)
  beqz t1, 1f
  li t0, SELFTEST_BUF_BYTES
1:add s6, s5, t0
  mv a0, s5
  mv a1, s6
  li a2, PATTERN0                     /* K(0) */
  call fill
  li t0, MTIME
  ld s3, 0(t0)                        /* s3: mtime at the previous count */
  li t0, INTERVAL
  add s2, s3, t0                      /* s2: the next deadline */
  li s8, 0                            /* s8: hart 1's iteration count last seen */
  mv s9, s3                           /* s9: mtime when it last changed */

count_loop:
  mv a0, s2
  call sleep_until
  li t0, MTIME
  ld s7, 0(t0)                        /* s7: now */
  sub t1, s7, s3
  li t2, JUMP_MAX
  bleu t1, t2, 1f
  la a0, jumped_text
  li a1, -1
  call say
1:mv s3, s7

  /* the register and memory counts agree */
  la t0, count_mem
  ld t1, 0(t0)
  bne t1, s1, bad_state
  /* the buffer holds K(s1) */
  mv a0, s5
  mv a1, s6
  addi t0, s1, 1
  li t1, PATTERN0
  mul a2, t0, t1
  call verify
  bnez a0, bad_checksum

  addi s1, s1, 1
  la t0, count_mem
  ld t1, 0(t0)
  addi t1, t1, 1
  sd t1, 0(t0)
  la a0, count_text
  mv a1, s1
  call say
  beq s1, s4, done

  mv a0, s5
  mv a1, s6
  addi t0, s1, 1
  li t1, PATTERN0
  mul a2, t0, t1
  call fill
#ifdef MIGRATE_CORRUPT_AT
  li t0, MIGRATE_CORRUPT_AT
  bne s1, t0, 2f
  li t0, 0x123 * STRIDE
  add t0, t0, s5
  ld t1, 0(t0)
  xori t1, t1, 1
  sd t1, 0(t0)
2:
#endif

  /* hart 1's progress (only once it has started: not with -smp 1) */
  la t0, hart1_started
  ld t0, 0(t0)
  beqz t0, 4f
  la t0, hart1_iter
  ld t0, 0(t0)
  beq t0, s8, 3f
  mv s8, t0
  mv s9, s7
  j 4f
3:sub t1, s7, s9
  li t2, STALL_MAX
  bleu t1, t2, 4f
  la a0, stalled_text
  addi a1, s1, 0
  call say
  mv s9, s7
4:
  /* next deadline: count N is due at start + N * INTERVAL; a late count catches up (the
     timer fires at once), unless it is JUMP_MAX late: then the schedule restarts from now */
  mv a0, s2
  call next_deadline
  mv s2, a0
  j count_loop

done:
  la a0, done_text
  li a1, -1
  call say
  li t0, TEST_DEVICE
  li t1, 0x5555
  sw t1, 0(t0)
5:j 5b

bad_state:                            /* t1: the count in memory */
  mv s10, t1
  la a0, bad_state_text
  addi a1, s1, 1
  call say
  call lock
  la a0, register_text
  call puts
  mv a0, s1
  call putdec
  la a0, memory_text
  call puts
  mv a0, s10
  call putdec
  li a0, '\n'
  call putc
  call unlock
  li a0, FAIL_STATE
  j fail_with

bad_checksum:                         /* a0: address, a1: found, a2: expected (K) */
  mv s10, a0
  mv s11, a1
  xor s7, a0, a2
  la a0, bad_checksum_text
  addi a1, s1, 1
  call say
  call detail
  li a0, FAIL_CHECKSUM
  j fail_with

/* ---------------------------------------------------------------- hart 1 */
hart1:
  li s1, 0                            /* s1: the iteration count, in a register */
  la t0, hart1_iter
  sd zero, 0(t0)                      /* ... and in memory */
  la s5, buffer1
  li t0, HART1_BUF_BYTES
  add s6, s5, t0
  mv a0, s5
  mv a1, s6
  li a2, PATTERN1
  call fill
  la t0, hart1_started
  li t1, 1
  sd t1, 0(t0)
  li t0, MTIME
  ld s2, 0(t0)
  li t0, INTERVAL
  add s2, s2, t0
hart1_loop:
  mv a0, s2
  call sleep_until
  la t0, hart1_iter
  ld t1, 0(t0)
  bne t1, s1, hart1_bad_state
  mv a0, s5
  mv a1, s6
  addi t0, s1, 1
  li t1, PATTERN1
  mul a2, t0, t1
  call verify
  bnez a0, hart1_bad_checksum
  addi s1, s1, 1
  la t0, hart1_iter
  ld t1, 0(t0)
  addi t1, t1, 1
  sd t1, 0(t0)
  mv a0, s5
  mv a1, s6
  addi t0, s1, 1
  li t1, PATTERN1
  mul a2, t0, t1
  call fill
#ifdef MIGRATE_CORRUPT_HART1_AT
  li t0, MIGRATE_CORRUPT_HART1_AT
  bne s1, t0, 2f
  li t0, 0x321 * STRIDE
  add t0, t0, s5
  ld t1, 0(t0)
  xori t1, t1, 1
  sd t1, 0(t0)
2:
#endif
  mv a0, s2
  call next_deadline
  mv s2, a0
  j hart1_loop

hart1_bad_state:
  la a0, hart1_bad_state_text
  addi a1, s1, 1
  call say
  li a0, FAIL_HART1
  j fail_with

hart1_bad_checksum:
  mv s10, a0
  mv s11, a1
  xor s7, a0, a2
  la a0, hart1_bad_checksum_text
  addi a1, s1, 1
  call say
  call detail
  li a0, FAIL_HART1
  j fail_with

park:
  wfi
  j park

/* ---------------------------------------------------------------- helpers */

/* sleep_until: a0 = mtime deadline. Arms this hart's mtimecmp and sleeps in WFI until the
   timer interrupt has been taken (the handler sets F_TIMER and disarms the timer). mstatus.MIE
   is 0 except for one instruction after WFI, so the interrupt cannot slip in between the test
   of F_TIMER and WFI. */
sleep_until:
  csrr t0, mscratch
  sd zero, F_TIMER(t0)
  csrr t1, mhartid
  slli t1, t1, 3
  li t2, MTIMECMP
  add t1, t1, t2
  sd a0, 0(t1)
1:ld t2, F_TIMER(t0)
  bnez t2, 2f
  wfi
  csrsi mstatus, 8                    /* the pending timer interrupt is taken here */
  csrci mstatus, 8
  j 1b
2:ret

/* bootargs_limit: a0 = the device tree blob (or anything else); returns N when a "bootargs"
   property (-append) holds "limit=N", else 0. The blob is big-endian (Devicetree Specification
   v0.4 ch. 5): a header, then tokens BEGIN_NODE (1) name, END_NODE (2), PROP (3) len nameoff
   value, NOP (4), END (9), each 4-byte aligned. Uses a0-a5, t0-t6. */
.macro BE32 rd, base, off
  lbu \rd, \off(\base)
  lbu t6, \off+1(\base)
  slli \rd, \rd, 8
  or \rd, \rd, t6
  lbu t6, \off+2(\base)
  slli \rd, \rd, 8
  or \rd, \rd, t6
  lbu t6, \off+3(\base)
  slli \rd, \rd, 8
  or \rd, \rd, t6
.endm
bootargs_limit:
  mv a5, a0
  li t0, 0x80000000                   /* only a blob in RAM */
  bltu a5, t0, 9f
  andi t0, a5, 3
  bnez t0, 9f
  BE32 t0, a5, 0
  li t1, 0xd00dfeed
  bne t0, t1, 9f
  BE32 t0, a5, 4
  add a4, a5, t0                      /* a4: the end */
  BE32 t0, a5, 8
  add a2, a5, t0                      /* a2: the token cursor */
  BE32 t0, a5, 12
  add a3, a5, t0                      /* a3: the strings */
1:bgeu a2, a4, 9f
  BE32 t0, a2, 0
  addi a2, a2, 4
  li t1, 1
  beq t0, t1, 2f
  li t1, 3
  beq t0, t1, 3f
  li t1, 9
  beq t0, t1, 9f
  j 1b                                /* END_NODE, NOP */
2:lbu t0, 0(a2)                       /* BEGIN_NODE: skip the name */
  addi a2, a2, 1
  bnez t0, 2b
  addi a2, a2, 3
  andi a2, a2, -4
  j 1b
3:BE32 t2, a2, 0                      /* PROP: t2 = len, t3 = name */
  BE32 t3, a2, 4
  addi a2, a2, 8
  add t3, t3, a3
  la t4, bootargs_name
4:lbu t0, 0(t3)
  lbu t1, 0(t4)
  bne t0, t1, 5f
  beqz t0, 6f
  addi t3, t3, 1
  addi t4, t4, 1
  j 4b
5:add a2, a2, t2                      /* another property: skip its value */
  addi a2, a2, 3
  andi a2, a2, -4
  j 1b
6:add a1, a2, t2                      /* bootargs: look for limit= in [a2, a1) */
  mv t3, a2
7:bgeu t3, a1, 9f
  la t4, limit_word
  mv t5, t3
8:lbu t1, 0(t4)
  beqz t1, 10f
  bgeu t5, a1, 11f
  lbu t0, 0(t5)
  bne t0, t1, 11f
  addi t4, t4, 1
  addi t5, t5, 1
  j 8b
11:addi t3, t3, 1
  j 7b
10:li a0, 0                           /* the digits after limit= */
  li t1, 10
12:bgeu t5, a1, 13f
  lbu t0, 0(t5)
  addi t0, t0, -'0'
  bgeu t0, t1, 13f
  mul a0, a0, t1
  add a0, a0, t0
  addi t5, t5, 1
  j 12b
13:ret
9:li a0, 0
  ret

/* next_deadline: a0 = the deadline just met; returns a0 + INTERVAL, or now + INTERVAL when
   that is JUMP_MAX or more in the past. */
next_deadline:
  li t0, INTERVAL
  add a0, a0, t0
  li t1, MTIME
  ld t1, 0(t1)
  li t2, JUMP_MAX
  add t2, t2, a0
  bltu t1, t2, 1f
  add a0, t1, t0
1:ret

/* fill: the 8-byte word at each address A = a0, a0 + STRIDE, ... below a1 becomes A ^ a2. */
fill:
1:xor t0, a0, a2
  sd t0, 0(a0)
  addi a0, a0, STRIDE
  bne a0, a1, 1b
  ret

/* verify: a0 = 0 when the word at each A = a0, a0 + STRIDE, ... below a1 is A ^ a2; otherwise
   a0 = the first differing word's address and a1 = what it holds (a2 unchanged). */
verify:
1:ld t0, 0(a0)
  xor t0, t0, a0
  bne t0, a2, 2f
  addi a0, a0, STRIDE
  bne a0, a1, 1b
  li a0, 0
  ret
2:xor a1, t0, a0
  ret

/* detail: prints "  word 0x<s10> holds 0x<s11> expected 0x<s7>". */
detail:
  addi sp, sp, -16
  sd ra, 8(sp)
  call lock
  la a0, word_text
  call puts
  mv a0, s10
  call puthex
  la a0, holds_text
  call puts
  mv a0, s11
  call puthex
  la a0, expected_text
  call puts
  mv a0, s7
  call puthex
  li a0, '\n'
  call putc
  call unlock
  ld ra, 8(sp)
  addi sp, sp, 16
  ret

/* say: prints the string a0, then the decimal a1 unless a1 = -1, then a newline, as one
   line under the UART lock. */
say:
  addi sp, sp, -16
  sd ra, 8(sp)
  sd a1, 0(sp)
  mv t3, a0
  call lock
  mv a0, t3
  call puts
  ld a0, 0(sp)
  li t0, -1
  beq a0, t0, 1f
  call putdec
1:li a0, '\n'
  call putc
  call unlock
  ld ra, 8(sp)
  addi sp, sp, 16
  ret

lock:
  la t0, uart_lock
  li t1, 1
1:amoswap.w.aq t2, t1, (t0)
  bnez t2, 1b
  ret

unlock:
  la t0, uart_lock
  amoswap.w.rl zero, zero, (t0)
  ret

/* putc: a0 = the character (uses t0, t1). */
putc:
  li t0, UART0
1:lbu t1, 5(t0)
  andi t1, t1, 0x20
  beqz t1, 1b
  sb a0, 0(t0)
  ret

/* puts: a0 = NUL-terminated string (uses t0-t2). */
puts:
  addi sp, sp, -16
  sd ra, 8(sp)
  mv t2, a0
1:lbu a0, 0(t2)
  beqz a0, 2f
  call putc
  addi t2, t2, 1
  j 1b
2:ld ra, 8(sp)
  addi sp, sp, 16
  ret

/* putdec: a0 = unsigned value, in decimal (uses t0-t5). */
putdec:
  addi sp, sp, -48
  sd ra, 40(sp)
  addi t3, sp, 32
  mv t4, t3
  li t5, 10
1:remu t2, a0, t5
  divu a0, a0, t5
  addi t2, t2, '0'
  addi t4, t4, -1
  sb t2, 0(t4)
  bnez a0, 1b
2:lbu a0, 0(t4)
  call putc
  addi t4, t4, 1
  bne t4, t3, 2b
  ld ra, 40(sp)
  addi sp, sp, 48
  ret

/* puthex: a0 = value, as 0x and 16 hex digits (uses t0-t5). */
puthex:
  addi sp, sp, -16
  sd ra, 8(sp)
  mv t3, a0
  li a0, '0'
  call putc
  li a0, 'x'
  call putc
  li t4, 60
1:srl a0, t3, t4
  andi a0, a0, 15
  addi a0, a0, '0'
  li t5, '9'
  ble a0, t5, 2f
  addi a0, a0, 'a' - '9' - 1
2:call putc
  addi t4, t4, -4
  bgez t4, 1b
  ld ra, 8(sp)
  addi sp, sp, 16
  ret

/* fail_with: a0 = code; the test device ends the run with status 0x3333 | code << 16. */
fail_with:
  li t0, TEST_DEVICE
  slli t1, a0, 16
  li t2, 0x3333
  or t1, t1, t2
  sw t1, 0(t0)
1:j 1b

/* The trap handler: the machine timer interrupt disarms this hart's timer and sets F_TIMER;
   a load access fault while F_PROBING is set is recorded in F_FAULTED and skipped; anything
   else is fatal. */
  .align 2
trap_entry:
  csrrw sp, mscratch, sp
  sd t0, F_T0(sp)
  sd t1, F_T1(sp)
  csrr t0, mcause
  bgez t0, 1f
  li t1, 0x8000000000000007
  bne t0, t1, unexpected_trap
  csrr t0, mhartid
  slli t0, t0, 3
  li t1, MTIMECMP
  add t0, t0, t1
  li t1, -1
  sd t1, 0(t0)
  li t1, 1
  sd t1, F_TIMER(sp)
  j 2f
1:ld t1, F_PROBING(sp)
  beqz t1, unexpected_trap
  li t1, 5                            /* load access fault */
  bne t0, t1, unexpected_trap
  li t1, 1
  sd t1, F_FAULTED(sp)
  csrr t0, mepc
  addi t0, t0, 4
  csrw mepc, t0
2:ld t0, F_T0(sp)
  ld t1, F_T1(sp)
  csrrw sp, mscratch, sp
  mret
unexpected_trap:
  ld sp, F_STACK(sp)
  call lock
  la a0, trap_text
  call puts
  csrr a0, mcause
  call puthex
  la a0, mepc_text
  call puts
  csrr a0, mepc
  call puthex
  la a0, hart_text
  call puts
  csrr a0, mhartid
  call putdec
  li a0, '\n'
  call putc
  call unlock
  li a0, FAIL_TRAP
  j fail_with

  .data
  .align 3
  .globl migrate_limit
migrate_limit: .dword LIMIT
  .type migrate_limit, @object
  .size migrate_limit, 8
count_mem: .dword 0
hart1_iter: .dword 0
hart1_started: .dword 0
uart_lock: .word 0, 0
  .align 6
frames: .space FRAME_SIZE * 2

bootargs_name: .asciz "bootargs"
limit_word: .asciz "limit="
start_text: .asciz "migrate_counter start limit "
count_text: .asciz "count "
done_text: .asciz "migrate_counter done"
jumped_text: .asciz "clock jumped"
stalled_text: .asciz "hart1 stalled at count "
bad_state_text: .asciz "BAD state at count "
bad_checksum_text: .asciz "BAD checksum at count "
hart1_bad_state_text: .asciz "hart1 BAD state at iteration "
hart1_bad_checksum_text: .asciz "hart1 BAD checksum at iteration "
register_text: .asciz "  register "
memory_text: .asciz " memory "
word_text: .asciz "  word "
holds_text: .asciz " holds "
expected_text: .asciz " expected "
trap_text: .asciz "BAD trap mcause "
mepc_text: .asciz " mepc "
hart_text: .asciz " hart "

  .bss
  .align 12
stacks: .space STACK_SIZE * 2
buffer0: .space BUF_BYTES
buffer1: .space HART1_BUF_BYTES
