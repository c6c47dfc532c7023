/* The ns16550a at 0x10000000: print a line by polling LSR.THRE, read back the scratch
   register and the divisor latch. The differential test compares the console output with
   QEMU's. */
#include "test.h"
RVTEST_BEGIN
  li s0, UART0
  /* scratch register round trip */
  li t0, 0x5a
  sb t0, 7(s0)
  lbu a0, 7(s0)
  CHECK(1, a0, 0x5a)
  /* divisor latch: DLAB=1, write DLL/DLM, read back, DLAB=0 */
  li t0, 0x83
  sb t0, 3(s0)
  li t0, 0x12
  sb t0, 0(s0)
  li t0, 0x34
  sb t0, 1(s0)
  lbu a0, 0(s0)
  CHECK(2, a0, 0x12)
  lbu a0, 1(s0)
  CHECK(3, a0, 0x34)
  li t0, 0x03
  sb t0, 3(s0)
  lbu a0, 3(s0)
  CHECK(4, a0, 0x03)
  /* LSR: transmitter empty (THRE|TEMT) with nothing received */
  lbu a0, 5(s0)
  andi a0, a0, 0x61
  CHECK(5, a0, 0x60)
  la a1, message
1:lbu a2, 0(a1)
  beqz a2, 3f
2:lbu t0, 5(s0)
  andi t0, t0, 0x20
  beqz t0, 2b
  sb a2, 0(s0)
  addi a1, a1, 1
  j 1b
3:
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
message: .asciz "hello from a bare-metal guest\n"
