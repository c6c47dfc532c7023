/* Prints "tick <n>" (hex) on the UART every 20 ms of guest time, 100 times, then passes;
   if mtime ever moved by more than 0.5 s between two ticks it prints "clock jumped". The
   monitor tests stop and continue it over QMP: the output must pause while stopped, and
   guest time must not jump over the stopped interval (swemu's documented policy). */
#include "test.h"
#define MTIME 0x200bff8
RVTEST_BEGIN
  csrr t0, mhartid           /* on a multi-hart machine the others wait */
  bnez t0, park
  li s0, UART0
  li s1, MTIME
  li s2, 100                 /* ticks left */
  la a1, banner
  call puts
1:ld s3, 0(s1)
  li t0, 200000              /* 20 ms at 10 MHz */
  add s3, s3, t0
2:ld t1, 0(s1)
  bltu t1, s3, 2b
  sub t1, t1, s3
  li t0, 5000000             /* 0.5 s */
  bltu t1, t0, 7f
  la a1, jumped
  call puts
7:la a1, tick
  call puts
  li a0, 100
  sub a0, a0, s2
  call puthex
  li a2, 10
  call putc
  addi s2, s2, -1
  bnez s2, 1b
  RVTEST_PASS

putc:                        /* a2: the character */
  lbu t2, 5(s0)
  andi t2, t2, 0x20
  beqz t2, putc
  sb a2, 0(s0)
  ret
puts:                        /* a1: NUL-terminated string */
  mv t4, ra
3:lbu a2, 0(a1)
  beqz a2, 4f
  call putc
  addi a1, a1, 1
  j 3b
4:mv ra, t4
  ret
puthex:                      /* a0: 64-bit value, 16 digits */
  mv t4, ra
  li t3, 60
5:srl a2, a0, t3
  andi a2, a2, 15
  addi a2, a2, '0'
  li t5, '9'
  ble a2, t5, 6f
  addi a2, a2, 'a' - '9' - 1
6:call putc
  addi t3, t3, -4
  bgez t3, 5b
  mv ra, t4
  ret
park:
  wfi
  j park
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
banner: .asciz "ticker start\n"
tick: .asciz "tick "
jumped: .asciz "clock jumped\n"
