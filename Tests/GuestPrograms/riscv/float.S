/* F and D: rounding modes, exception flags, NaN boxing and the canonical NaN, fmin/fmax
   rules, fcvt saturation, fclass, FS=Off trapping, reserved rounding modes (§11-12). */
#include "test.h"
#define FLAGS(n, value) csrrw a0, fflags, zero; CHECK(n, a0, value)
RVTEST_BEGIN
  /* FS starts Off: an FP instruction is illegal */
  fadd.d f0, f0, f0
  LOAD_TRAP(a0, a1)
  CHECK(1, a0, 2)
  li t0, 1 << 13
  csrs mstatus, t0           /* FS = Initial */
  csrw fcsr, zero
  /* 1.0 + 2^-60 rounds: RNE gives 1.0 (NX), RUP the next double */
  li t0, 0x3ff0000000000000
  fmv.d.x f1, t0
  li t0, 0x3c30000000000000  /* 2^-60 */
  fmv.d.x f2, t0
  fadd.d f3, f1, f2
  fmv.x.d a0, f3
  CHECK(2, a0, 0x3ff0000000000000)
  FLAGS(3, 1)
  fadd.d f3, f1, f2, rup
  fmv.x.d a0, f3
  CHECK(4, a0, 0x3ff0000000000001)
  fsub.d f3, f1, f2, rdn
  fmv.x.d a0, f3
  CHECK(5, a0, 0x3fefffffffffffff)
  fsub.d f3, f1, f2, rtz
  fmv.x.d a0, f3
  CHECK(6, a0, 0x3fefffffffffffff)
  /* dynamic rounding from frm */
  li t0, 3
  csrw frm, t0
  fadd.d f3, f1, f2
  fmv.x.d a0, f3
  CHECK(7, a0, 0x3ff0000000000001)
  csrw frm, zero
  /* FS became Dirty and SD is set */
  csrr a0, mstatus
  srli a0, a0, 63
  CHECK(8, a0, 1)
  /* division by zero: DZ and infinity */
  csrw fflags, zero
  fmv.d.x f4, zero
  fdiv.d f3, f1, f4
  fmv.x.d a0, f3
  CHECK(9, a0, 0x7ff0000000000000)
  FLAGS(10, 8)
  /* 0/0: NV and the canonical NaN */
  fdiv.d f3, f4, f4
  fmv.x.d a0, f3
  CHECK(11, a0, 0x7ff8000000000000)
  FLAGS(12, 16)
  /* overflow: OF|NX; RTZ gives the largest finite */
  li t0, 0x7fefffffffffffff
  fmv.d.x f5, t0
  fmul.d f3, f5, f5
  fmv.x.d a0, f3
  CHECK(13, a0, 0x7ff0000000000000)
  FLAGS(14, 5)
  fmul.d f3, f5, f5, rtz
  fmv.x.d a0, f3
  CHECK(15, a0, 0x7fefffffffffffff)
  FLAGS(16, 5)
  /* underflow: tiny and inexact */
  li t0, 0x0010000000000001  /* smallest normal + 1 ulp */
  fmv.d.x f6, t0
  li t0, 0x3fe0000000000000  /* 0.5 */
  fmv.d.x f7, t0
  fmul.d f3, f6, f7
  FLAGS(17, 3)
  /* NaN boxing: a single read from a register whose upper half is not all ones is the
     canonical NaN */
  li t0, 0x000000003f800000
  fmv.d.x f8, t0
  fadd.s f9, f8, f8
  fmv.x.w a0, f9
  CHECK(18, a0, 0x7fc00000)
  /* fmv.w.x boxes: upper 32 bits all ones */
  li t0, 0x3f800000
  fmv.w.x f10, t0
  fmv.x.d a0, f10
  CHECK(19, a0, 0xffffffff3f800000)
  /* fmv.x.w sign-extends the raw low word */
  li t0, 0xffffffffbf800000
  fmv.d.x f11, t0
  fmv.x.w a0, f11
  CHECK(20, a0, 0xffffffffbf800000)
  /* fmin/fmax: one NaN -> the other operand; -0 < +0; sNaN raises NV */
  li t0, 0x7ff4000000000000  /* sNaN */
  fmv.d.x f12, t0
  fmin.d f3, f12, f1
  fmv.x.d a0, f3
  CHECK(21, a0, 0x3ff0000000000000)
  FLAGS(22, 16)
  li t0, 0x8000000000000000
  fmv.d.x f13, t0
  fmin.d f3, f4, f13
  fmv.x.d a0, f3
  CHECK(23, a0, 0x8000000000000000)
  fmax.d f3, f13, f4
  fmv.x.d a0, f3
  CHECK(24, a0, 0)
  fmax.d f3, f12, f12
  fmv.x.d a0, f3
  CHECK(25, a0, 0x7ff8000000000000)
  FLAGS(26, 16)
  /* comparisons: feq is quiet, flt signals on a quiet NaN */
  li t0, 0x7ff8000000000000
  fmv.d.x f14, t0
  feq.d a0, f14, f1
  CHECK(27, a0, 0)
  FLAGS(28, 0)
  flt.d a0, f14, f1
  CHECK(29, a0, 0)
  FLAGS(30, 16)
  /* fcvt saturation */
  li t0, 0x41e0000000000000  /* 2^31 */
  fmv.d.x f15, t0
  fcvt.w.d a0, f15, rtz
  CHECK(31, a0, 0x7fffffff)
  FLAGS(32, 16)
  fcvt.w.d a0, f14, rtz       /* NaN -> max */
  CHECK(33, a0, 0x7fffffff)
  FLAGS(34, 16)
  li t0, 0xbff0000000000000  /* -1.0 */
  fmv.d.x f16, t0
  fcvt.wu.d a0, f16, rtz
  CHECK(35, a0, 0)
  FLAGS(36, 16)
  li t0, 0xbfe0000000000000  /* -0.5 rounds to 0 in RTZ: only NX */
  fmv.d.x f17, t0
  fcvt.wu.d a0, f17, rtz
  CHECK(37, a0, 0)
  FLAGS(38, 1)
  fcvt.lu.d a0, f15, rtz
  CHECK(39, a0, 0x80000000)
  fcvt.wu.d a0, f15, rtz      /* 2^31 fits unsigned: sign-extended result */
  CHECK(40, a0, 0xffffffff80000000)
  li t0, -3
  fcvt.d.l f3, t0
  fmv.x.d a0, f3
  CHECK(41, a0, 0xc008000000000000)
  /* fclass */
  fclass.d a0, f13
  CHECK(42, a0, 1 << 3)      /* -0 */
  fclass.d a0, f12
  CHECK(43, a0, 1 << 8)      /* sNaN */
  fclass.d a0, f14
  CHECK(44, a0, 1 << 9)      /* qNaN */
  /* fused multiply-add rounds once: (1+2^-52)*(1-2^-53) - 1 = 2^-53 - 2^-105 exactly,
     where rounding the product first would give 0 */
  li t0, 0x3ff0000000000001
  fmv.d.x f18, t0
  li t0, 0x3fefffffffffffff
  fmv.d.x f19, t0
  fmsub.d f3, f18, f19, f1
  fmv.x.d a0, f3
  CHECK(45, a0, 0x3c9ffffffffffffe)
  /* fmadd(0, inf, qNaN) raises NV (§11.6) */
  li t0, 0x7ff0000000000000
  fmv.d.x f20, t0
  csrw fflags, zero
  fmadd.d f3, f4, f20, f14
  FLAGS(46, 16)
  /* a reserved rounding mode in frm makes dynamic-rm instructions illegal */
  li t0, 5
  csrw frm, t0
  la t5, trap_cause
  sd zero, 0(t5)
  fadd.d f3, f1, f1
  LOAD_TRAP(a0, a1)
  CHECK(47, a0, 2)
  csrw frm, zero
  /* single precision conversions */
  li t0, 0x3fb99999a0000000  /* double near 0.1 */
  fmv.d.x f21, t0
  fcvt.s.d f22, f21
  fmv.x.w a0, f22
  CHECK(48, a0, 0x3dcccccd)
  fcvt.d.s f23, f22
  fmv.x.d a0, f23
  CHECK(49, a0, 0x3fb99999a0000000)
  /* flw/fsw round trip, fsw stores the low word */
  la t1, fpdata
  flw f24, 0(t1)
  fsw f24, 4(t1)
  lw a0, 4(t1)
  CHECK(50, a0, 0x40490fdb)
  fld f25, 8(t1)
  fsd f25, 16(t1)
  ld a0, 16(t1)
  CHECK(51, a0, 0x400921fb54442d18)
  /* What the JIT does on SSE2/FMA3 (the same checks run on the interpreter and QEMU):
     NaN results are the canonical NaN whatever x86 makes of them, with NV only where RISC-V
     raises it; sign injection keeps NaN payloads; flags raised before a trapping access are
     in fflags when the trap is taken. */
  csrw fflags, zero
  li t0, 0xbff0000000000000   /* -1.0 */
  fmv.d.x f26, t0
  fsqrt.d f3, f26
  fmv.x.d a0, f3
  CHECK(52, a0, 0x7ff8000000000000)
  FLAGS(53, 16)
  li t0, 0x7ff0000000000001   /* signaling NaN */
  fmv.d.x f27, t0
  li t0, 0x3ff0000000000000
  fmv.d.x f28, t0
  fadd.d f3, f27, f28
  fmv.x.d a0, f3
  CHECK(54, a0, 0x7ff8000000000000)
  FLAGS(55, 16)
  li t0, 0xfff8000000000123   /* quiet NaN with a payload and the sign set */
  fmv.d.x f29, t0
  fmul.d f3, f29, f28
  fmv.x.d a0, f3
  CHECK(56, a0, 0x7ff8000000000000)
  FLAGS(57, 0)
  fsgnjx.d f3, f29, f29       /* fabs keeps the payload */
  fmv.x.d a0, f3
  CHECK(58, a0, 0x7ff8000000000123)
  fsgnjn.d f3, f28, f28       /* fneg */
  fmv.x.d a0, f3
  CHECK(59, a0, 0xbff0000000000000)
  li t0, 0x4000000000000000   /* 2.0 */
  fmv.d.x f30, t0
  li t0, 0x4008000000000000   /* 3.0 */
  fmv.d.x f31, t0
  fnmadd.d f3, f30, f31, f28  /* -(2*3) - 1 */
  fmv.x.d a0, f3
  CHECK(60, a0, 0xc01c000000000000)
  fnmsub.d f3, f30, f31, f28  /* -(2*3) + 1 */
  fmv.x.d a0, f3
  CHECK(61, a0, 0xc014000000000000)
  FLAGS(62, 0)
  li t0, 0x7ff0000000000000   /* inf * 0 + 1: NV, canonical NaN */
  fmv.d.x f26, t0
  fmv.d.x f27, zero
  fmadd.d f3, f26, f27, f28
  fmv.x.d a0, f3
  CHECK(63, a0, 0x7ff8000000000000)
  FLAGS(64, 16)
  li t0, 0x3c30000000000000   /* 2^-60: 1 + 2^-60 is inexact */
  fmv.d.x f26, t0
  fadd.d f3, f28, f26
  ld a1, 0(zero)              /* an access fault in the same block */
  FLAGS(65, 1)
  LOAD_TRAP(a0, a1)
  CHECK(66, a0, 5)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
.align 3
fpdata: .word 0x40490fdb, 0
        .dword 0x400921fb54442d18, 0
