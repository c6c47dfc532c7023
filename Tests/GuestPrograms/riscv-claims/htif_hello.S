/* -M spike (ClaimsTests): prints through HTIF (device 1, command 1: one console character,
   acknowledged in fromhost) and exits with code 42 (device 0: tohost = 42 << 1 | 1), as
   QEMU's spike machine and Spike do (hw/char/riscv_htif.c). No test.h: spike has no
   SiFive test device. */
  .section .text.init
  .globl _start
_start:
  la s0, message
1:lbu a0, 0(s0)
  beqz a0, 3f
  li t0, 1 << 56 | 1 << 48
  or t0, t0, a0
  la t1, tohost
  sd t0, 0(t1)
  la t2, fromhost
2:ld t3, 0(t2)
  beqz t3, 2b
  sd zero, 0(t2)
  addi s0, s0, 1
  j 1b
3:li t0, 42 << 1 | 1
  la t1, tohost
  sd t0, 0(t1)
4:j 4b

  .section .tohost, "aw", @progbits
  .align 6
  .globl tohost
tohost: .dword 0
  .size tohost, 8
  .align 6
  .globl fromhost
fromhost: .dword 0
  .size fromhost, 8

  .data
message: .string "hello from HTIF\n"
