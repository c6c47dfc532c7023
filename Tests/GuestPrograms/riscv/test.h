/* Test macros for swemu's bare-metal RISC-V programs (assembly).
 *
 * A program is a list of numbered checks. The first failing check ends the run through
 * the SiFive test device with exit code = its number (0x3333 | n << 16); if all pass the
 * program writes 0x5555 (exit 0). So `swemu-system-riscv64 -M virt -bios none -kernel P`
 * and QEMU's `qemu-system-riscv64` give the same exit status, and the number names the check.
 * gp holds the number of the check being run; the trap handler stores mcause/mtval/mepc. */
#define TEST_DEVICE 0x100000
#define UART0 0x10000000

#define RVTEST_BEGIN                  \
  .section .text.init;                \
  .globl _start;                      \
_start:                               \
  la t0, trap_entry;                  \
  csrw mtvec, t0;                     \
  li gp, 0;                           \
  la sp, stack_top;

/* Pass: write 0x5555 to the test device. */
#define RVTEST_PASS                   \
  li t0, TEST_DEVICE;                 \
  li t1, 0x5555;                      \
  sw t1, 0(t0);                       \
1: j 1b;

/* Fail with exit code gp. */
#define RVTEST_FAIL_CODE              \
fail:                                 \
  li t0, TEST_DEVICE;                 \
  slli t1, gp, 16;                    \
  li t2, 0x3333;                      \
  or t1, t1, t2;                      \
  sw t1, 0(t0);                       \
1: j 1b;

/* Check that `reg` equals `value` (a 64-bit immediate); check number n. */
#define CHECK(n, reg, value)          \
  li gp, n;                           \
  li t6, value;                       \
  bne reg, t6, fail;

/* Run `code`, then check `reg` == `value`. */
#define TEST(n, reg, value, code...)  \
  li gp, n;                           \
  code;                               \
  li t6, value;                       \
  bne reg, t6, fail;

/* A default M-mode trap handler: records mcause, mtval, mepc in trap_cause/trap_tval/
   trap_epc and counts traps. After an exception it returns to the instruction after the
   trapping one (length from the instruction's low bits), so a test can provoke a trap and
   then inspect it; after an instruction fetch fault (cause 1 or 12) it returns to ra, so
   a test provokes one with `jalr`; after an interrupt it masks that interrupt in mie. */
#define RVTEST_TRAP_HANDLER           \
  .align 2;                           \
trap_entry:                           \
  csrrw t6, mscratch, t6;             \
  la t6, trap_save;                   \
  sd t0, 0(t6);                       \
  sd t1, 8(t6);                       \
  csrr t0, mcause;                    \
  la t1, trap_cause;                  \
  sd t0, 0(t1);                       \
  csrr t0, mtval;                     \
  sd t0, 8(t1);                       \
  csrr t0, mepc;                      \
  sd t0, 16(t1);                      \
  ld t0, 24(t1);                      \
  addi t0, t0, 1;                     \
  sd t0, 24(t1);                      \
  csrr t0, mcause;                    \
  bgez t0, 3f;                        \
  li t1, 1;                           \
  sll t1, t1, t0;                     \
  csrc mie, t1;                       \
  j 2f;                               \
3: addi t1, t0, -1;                   \
  beqz t1, 4f;                        \
  addi t1, t0, -12;                   \
  beqz t1, 4f;                        \
  csrr t0, mepc;                      \
  lhu t1, 0(t0);                      \
  andi t1, t1, 3;                     \
  addi t0, t0, 2;                     \
  li t6, 3;                           \
  bne t1, t6, 1f;                     \
  addi t0, t0, 2;                     \
1: csrw mepc, t0;                     \
  j 2f;                               \
4: csrw mepc, ra;                     \
2: la t6, trap_save;                  \
  ld t0, 0(t6);                       \
  ld t1, 8(t6);                       \
  csrrw t6, mscratch, t6;             \
  mret;

#define RVTEST_DATA                   \
  .data;                              \
  .align 3;                           \
trap_save: .dword 0, 0;               \
  .globl trap_cause;                  \
trap_cause: .dword 0;                 \
trap_tval: .dword 0;                  \
trap_epc: .dword 0;                   \
trap_count: .dword 0;                 \
  .bss;                               \
  .align 4;                           \
stack: .space 4096;                   \
stack_top:

/* Moving between privilege levels, for programs that check S- and U-mode behaviour: they set
   mtvec to m_entry (RVTEST_BACK_TO_M_HANDLER, placed after RVTEST_TRAP_HANDLER), which owns
   s11. ENTER(mpp, label) continues at label in mode mpp (3 M, 1 S, 0 U); BACK_TO_M (an ecall
   with a7 = 0x4d from S or U) returns to M-mode after the ecall; every other trap goes to the
   recording handler. CLEAR_TRAP forgets the last recorded trap. */
#define ENTER(mpp, label) \
  li t0, 3 << 11; csrc mstatus, t0; li t0, (mpp) << 11; csrs mstatus, t0; \
  la t0, label; csrw mepc, t0; mret
#define BACK_TO_M li a7, 0x4d; ecall
#define CLEAR_TRAP la t5, trap_cause; sd zero, 0(t5); sd zero, 8(t5)
#define RVTEST_BACK_TO_M_HANDLER      \
  .align 2;                           \
m_entry:                              \
  addi s11, a7, -0x4d;                \
  bnez s11, trap_entry;               \
  csrr s11, mcause;                   \
  addi s11, s11, -8;                  \
  srli s11, s11, 1;                   \
  bnez s11, trap_entry;               \
  li a7, 0;                           \
  li s11, 3 << 11;                    \
  csrs mstatus, s11;                  \
  csrr s11, mepc;                     \
  addi s11, s11, 4;                   \
  csrw mepc, s11;                     \
  mret;

/* Load the recorded trap fields. */
#define LOAD_TRAP(cause_reg, tval_reg) \
  la t5, trap_cause;                  \
  ld cause_reg, 0(t5);                \
  ld tval_reg, 8(t5);
