/* Zba, Zbb, Zbs (Bitmanip 1.0.0). */
#include "test.h"
RVTEST_BEGIN
  li s0, 0x00000000f0f0f0f0
  li s1, 3
  TEST(1, a0, 0x00000000f0f0f0f3, add.uw a0, s0, s1)
  TEST(2, a0, 0x0000000000000003 + (0x00000000ffffffff), li t0, -1; add.uw a0, t0, s1)
  TEST(3, a0, 3 + (0xf0f0f0f0 << 1), sh1add a0, s0, s1)
  TEST(4, a0, 3 + (0xf0f0f0f0 << 2), sh2add a0, s0, s1)
  TEST(5, a0, 3 + (0xf0f0f0f0 << 3), sh3add a0, s0, s1)
  TEST(6, a0, 3 + (0xffffffff << 3), li t0, -1; sh3add.uw a0, t0, s1)
  TEST(7, a0, 0xffffffff << 4, li t0, -1; slli.uw a0, t0, 4)
  TEST(8, a0, 0xf0f0f0f0 & ~3, andn a0, s0, s1)
  TEST(9, a0, -1, li t0, 0; orn a0, s0, t0)
  TEST(10, a0, ~(0xf0f0f0f0 ^ 3), xnor a0, s0, s1)
  TEST(11, a0, 32, clz a0, s0)
  TEST(12, a0, 64, clz a0, zero)
  TEST(13, a0, 0, clzw a0, s0)
  TEST(14, a0, 32, clzw a0, zero)
  TEST(15, a0, 4, ctz a0, s0)
  TEST(16, a0, 64, ctz a0, zero)
  TEST(17, a0, 32, li t0, 0x100000000; ctzw a0, t0)
  TEST(18, a0, 16, cpop a0, s0)
  TEST(19, a0, 2, li t0, 0x300000003; cpopw a0, t0)
  TEST(20, a0, 3, li t0, -5; max a0, t0, s1)
  TEST(21, a0, -5, li t0, -5; maxu a0, t0, s1)
  TEST(22, a0, -5, li t0, -5; min a0, t0, s1)
  TEST(23, a0, 3, li t0, -5; minu a0, t0, s1)
  TEST(24, a0, -16, li t0, 0xf0; sext.b a0, t0)
  TEST(25, a0, -3856, li t0, 0xf0f0; sext.h a0, t0)
  TEST(26, a0, 0xf0f0, zext.h a0, s0)
  TEST(27, a0, 0x8000000000000001, li t0, 0xc000000000000000; li t1, 1; rol a0, t0, t1)
  TEST(28, a0, 0x6000000000000000, li t0, 0xc000000000000000; li t1, 1; ror a0, t0, t1)
  TEST(29, a0, 0x8000000000000001, li t0, 3; rori a0, t0, 1)
  TEST(30, a0, 0xffffffff80000001, li t0, 3; roriw a0, t0, 1)
  TEST(31, a0, 1, li t0, 0x80000000; li t1, 1; rolw a0, t0, t1)
  TEST(32, a0, 0xffffffff80000000, li t0, 1; li t1, 1; rorw a0, t0, t1)
  TEST(33, a0, 0x00ff00ffff0000ff, li t0, 0x0001007f80000010; orc.b a0, t0)
  TEST(34, a0, 0x0807060504030201, li t0, 0x0102030405060708; rev8 a0, t0)
  TEST(35, a0, 0xf0f0f0e0, li t0, 4; bclr a0, s0, t0)
  TEST(36, a0, 0xf0f0f0f0 & ~(1 << 31), bclri a0, s0, 31)
  TEST(37, a0, 1, li t0, 7; bext a0, s0, t0)
  TEST(38, a0, 0, bexti a0, s0, 63)
  TEST(39, a0, 0xf0f0f0f1, li t0, 64; binv a0, s0, t0)   /* index taken mod 64 */
  TEST(40, a0, 0x80000000f0f0f0f0, binvi a0, s0, 63)
  TEST(41, a0, 0xf0f0f0f8, li t0, 3; bset a0, s0, t0)
  TEST(42, a0, 0x00000001f0f0f0f0, bseti a0, s0, 32)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
