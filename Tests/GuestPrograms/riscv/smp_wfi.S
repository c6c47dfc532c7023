/* WFI resumes only for an interrupt pending in mip & mie (Privileged §3.3.3), never for an
   interrupt source the hart has not enabled (the tests run smp* programs with -smp 4).

   Hart 1 enables only its software interrupt (mie.MSIE, with mstatus.MIE clear so nothing
   traps) and executes one WFI. Hart 0 meanwhile disturbs it in every way that does not
   concern it: hart 1's mtimecmp is set in the past (MTIP pending, MTIE clear) and back, its
   S-level PLIC context gets the UART's interrupt (SEIP pending, SEIE clear) and loses it.
   Only then does hart 0 set `flag` and send hart 1 its IPI. Hart 1 must find the flag set
   after its WFI: a hart that left WFI early would read 0.

   The spec allows WFI to resume for no reason, but firmware relies on it not doing so, as
   on QEMU: OpenSBI 1.1 (Debian 12's, QEMU 7.2's) marks a hart START_PENDING before storing
   its start address (fixed in 1.3), so a secondary hart that left its WFI in between jumped
   to a stale address. Harts 2 and 3 sleep. */
#include "test.h"
#define ACLINT 0x2000000
#define MTIMECMP1 (ACLINT + 0x4000 + 8)
#define PLIC 0xc000000
#define MIP_MSIP 8
#define MTIME (ACLINT + 0xbff8)
/* 20 ms of mtime (10 MHz): a delay lasts as long under every engine, so a host thread that
   stops the machine meanwhile (BareMetalTests.wfiOutlastsMachineStops) gets to do it often. */
#define DELAY 200000

RVTEST_BEGIN
  csrr s0, mhartid
  li t0, 1
  beq s0, t0, hart1
  bnez s0, park

  /* Hart 0: wait until hart 1 is about to sleep, then give it time to. */
  la s1, ready
1:lw t0, 0(s1)
  beqz t0, 1b
  call delay

  /* Hart 1's timer compare in the past, its interrupt disabled: MTIP is pending. */
  li s2, MTIMECMP1
  sd zero, 0(s2)
  call delay
  li t0, -1
  sd t0, 0(s2)

  /* The UART's transmitter-empty interrupt (source 10) routed to hart 1's S-level context
     (context 3): SEIP is pending on hart 1, SEIE is clear. */
  li s3, PLIC
  li t0, 1
  sw t0, 40(s3)              /* priority[10] = 1 */
  li s4, PLIC + 0x2000 + 3 * 0x80
  li t0, 1 << 10
  sw t0, 0(s4)               /* context 3 enables source 10 */
  li s5, PLIC + 0x200000 + 3 * 0x1000
  sw zero, 0(s5)             /* context 3 threshold 0 */
  li s6, UART0
  li t0, 2
  sb t0, 1(s6)               /* IER = ETBEI: the line rises */
  call delay
  sb zero, 1(s6)             /* and falls */
  lw t0, 4(s5)               /* claim and complete what the PLIC kept pending */
  sw t0, 4(s5)
  sw zero, 0(s4)
  call delay

  /* Now the real wake-up. */
  la s1, flag
  li t0, 1
  sw t0, 0(s1)
  fence w, w
  li t0, ACLINT + 4
  li t1, 1
  sw t1, 0(t0)               /* MSIP of hart 1 */

  la s1, done
2:lw t0, 0(s1)
  beqz t0, 2b
  fence r, rw
  la s1, observed
  lw a0, 0(s1)
  CHECK(1, a0, 1)            /* hart 1 saw the flag after its WFI */
  lw a0, 4(s1)
  CHECK(2, a0, MIP_MSIP)     /* and its wake-up was the IPI */
  RVTEST_PASS

hart1:
  li t0, MIP_MSIP
  csrw mie, t0
  la s1, ready
  li t0, 1
  sw t0, 0(s1)
  wfi
  la s1, flag
  lw t0, 0(s1)
  csrr t1, mip
  andi t1, t1, MIP_MSIP
  la s1, observed
  sw t0, 0(s1)
  sw t1, 4(s1)
  fence rw, w
  la s1, done
  li t0, 1
  sw t0, 0(s1)
park:
  csrw mie, zero
3:wfi
  j 3b

delay:
  li t0, MTIME
  ld t1, 0(t0)
  li t2, DELAY
  add t1, t1, t2
4:ld t2, 0(t0)
  bltu t2, t1, 4b
  ret

RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 64
ready: .word 0
  .balign 64
flag: .word 0
  .balign 64
done: .word 0
  .balign 64
observed: .word 0, 0
