/* Data on the same page as hot code (Benchmarks/codepage-riscv64): a loop that increments a
   counter in memory ITERATIONS times, with the counter either on its own page (SAME_PAGE
   undefined) or on the 4 KiB page holding the loop itself (SAME_PAGE defined). An emulator
   that tracks code pages pays for every store to one: QEMU 7.2 drops and retranslates the
   page's code on each store. Prints the counter on the UART and exits through the SiFive
   test device, so both runs can be checked. */
#define ITERATIONS 20000000
#define UART0 0x10000000
#define TEST_DEVICE 0x100000
  .section .text.init
  .globl _start
  .balign 4096
_start:
  la t0, counter
  li t1, ITERATIONS
1:
  ld t2, 0(t0)
  addi t2, t2, 1
  sd t2, 0(t0)
  addi t1, t1, -1
  bnez t1, 1b
  /* print the counter in hex */
  ld a0, 0(t0)
  li t0, UART0
  li t2, 60
2:
  srl t3, a0, t2
  andi t3, t3, 15
  addi t3, t3, 48
  li t4, 58
  blt t3, t4, 3f
  addi t3, t3, 39
3:
  sb t3, 0(t0)
  addi t2, t2, -4
  bgez t2, 2b
  li t3, 10
  sb t3, 0(t0)
  li t0, TEST_DEVICE
  li t1, 0x5555
  sw t1, 0(t0)
4:
  j 4b
#ifdef SAME_PAGE
  .balign 8
counter: .dword 0
#else
  .data
  .balign 4096
counter: .dword 0
#endif
