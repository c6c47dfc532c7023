/* RV64I and M: arithmetic edge cases (overflow, shifts by >= XLEN bits masked,
   W-suffix sign extension, division by zero and MIN/-1, as the M spec's table 7.1 says). */
#include "test.h"
RVTEST_BEGIN
  TEST(1, a0, 3, li a1, 1; li a2, 2; add a0, a1, a2)
  TEST(2, a0, 0x8000000000000000, li a1, 0x7fffffffffffffff; addi a0, a1, 1)
  TEST(3, a0, -1, li a1, 0; addi a0, a1, -1)
  TEST(4, a0, 0xffffffff80000000, li a1, 0x7fffffff; addiw a0, a1, 1)
  TEST(5, a0, 0x40, li a1, 1; li a2, 70; sll a0, a1, a2)             /* shift amount masked to 6 bits */
  TEST(6, a0, 0xffffffff80000000, li a1, 1; li a2, 63; sllw a0, a1, a2)  /* sllw masks to 5 bits: 1<<31 */
  TEST(7, a0, -1, li a1, -8; srai a0, a1, 63)
  TEST(8, a0, 1, li a1, -8; srli a0, a1, 63)
  TEST(9, a0, 0xffffffffffffffff, li a1, 0x80000000; sraiw a0, a1, 31)
  TEST(10, a0, 1, li a1, -1; li a2, 1; slt a0, a1, a2)
  TEST(11, a0, 0, li a1, -1; li a2, 1; sltu a0, a1, a2)
  TEST(12, a0, 1, li a1, 5; sltiu a0, a1, -1)                          /* imm sign-extended, compared unsigned */
  TEST(13, a0, 0x12345000, lui a0, 0x12345)
  TEST(14, a0, 0xfffffffff0000000, lui a0, 0xf0000)                    /* lui sign-extends on RV64 */
  /* M extension */
  TEST(20, a0, -1, li a1, 42; li a2, 0; div a0, a1, a2)
  TEST(21, a0, -1, li a1, 42; li a2, 0; divu a0, a1, a2)
  TEST(22, a0, 42, li a1, 42; li a2, 0; rem a0, a1, a2)
  TEST(23, a0, 42, li a1, 42; li a2, 0; remu a0, a1, a2)
  TEST(24, a0, 0x8000000000000000, li a1, 0x8000000000000000; li a2, -1; div a0, a1, a2)
  TEST(25, a0, 0, li a1, 0x8000000000000000; li a2, -1; rem a0, a1, a2)
  TEST(26, a0, 0xffffffff80000000, li a1, 0x80000000; li a2, -1; divw a0, a1, a2)
  TEST(27, a0, 0, li a1, 0x80000000; li a2, -1; remw a0, a1, a2)
  TEST(28, a0, -1, li a1, 5; li a2, 0; divuw a0, a1, a2)
  TEST(29, a0, -3, li a1, -7; li a2, 2; div a0, a1, a2)                /* rounds toward zero */
  TEST(30, a0, -1, li a1, -7; li a2, 2; rem a0, a1, a2)                /* sign of the dividend */
  TEST(31, a0, 0xfffffffffffffffe, li a1, -1; li a2, 2; mulh a0, a1, a2; li a0, -2; mul a0, a1, a2)
  TEST(32, a0, -1, li a1, -1; li a2, 2; mulh a0, a1, a2)
  TEST(33, a0, 1, li a1, -1; li a2, 2; mulhu a0, a1, a2)
  TEST(34, a0, -1, li a1, -1; li a2, 2; mulhsu a0, a1, a2)
  TEST(35, a0, 0xffffffff80000000, li a1, 0x10000; li a2, 0x8000; mulw a0, a1, a2)
  TEST(36, a0, 0, li a1, 0x7fffffffffffffff; li a2, 2; mulhu a0, a1, a2)
  /* x0 stays zero */
  TEST(40, zero, 0, li a1, 5; addi zero, a1, 1)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
