/* Physical memory protection (Privileged 1.12 §3.7): TOR, NA4 and NAPOT regions; R/W/X
   enforced on S- and U-mode loads, stores and fetches (access faults 5/7/1, mtval = the
   address); the lowest-numbered matching entry wins, also when it denies; an access only
   partly inside an entry fails; no match fails below M; unlocked entries do not bind
   M-mode, M-mode loads and stores with MPRV = 1 are checked at MPP's privilege; a locked
   entry binds M-mode too, ignores writes to its pmpcfg and pmpaddr, and a locked TOR entry
   also locks the pmpaddr below it. satp is Bare. S and U snippets run between ENTER and
   BACK_TO_M (`ecall` with a7 = 0x4d, handled by m_entry, which owns s11); M checks what
   the recording handler saw. */
#include "test.h"
#define R 0x01
#define W 0x02
#define X 0x04
#define TOR 0x08
#define NA4 0x10
#define NAPOT 0x18
#define L 0x80
#define MSTATUS_MPRV (1 << 17)
#define EXPECT_AT(n, cause, addr) LOAD_TRAP(a0, a1); CHECK(n, a0, cause); li gp, n; la t6, addr; bne a1, t6, fail; CLEAR_TRAP
#define EXPECT_NONE(n) LOAD_TRAP(a0, a1); CHECK(n, a0, 0)
/* pmpaddr values: NAPOT over `size` bytes at `label`, or the address >> 2 */
#define SET_NAPOT(csr, label, size) la t0, label; srli t0, t0, 2; ori t0, t0, ((size) / 8) - 1; csrw csr, t0
#define SET_ADDR(csr, label) la t0, label; srli t0, t0, 2; csrw csr, t0
#define MPRV_AS(mpp) li t0, 3 << 11; csrc mstatus, t0; li t0, ((mpp) << 11) | MSTATUS_MPRV; csrs mstatus, t0
#define MPRV_OFF li t0, MSTATUS_MPRV; csrc mstatus, t0

RVTEST_BEGIN
  la t0, m_entry
  csrw mtvec, t0
  /* entry 0: NAPOT, page_r, R */
  SET_NAPOT(pmpaddr0, page_r, 4096)
  /* entry 1: NA4, the word at page_na4 + 8, R */
  SET_ADDR(pmpaddr1, page_na4 + 8)
  /* entries 2-3: TOR [page_x, page_x + 4096), X only (entry 2 OFF gives the base) */
  SET_ADDR(pmpaddr2, page_x)
  SET_ADDR(pmpaddr3, page_x + 4096)
  /* entries 4-5: page_prio denied by entry 4, though entry 5 (both pages) allows RW */
  SET_NAPOT(pmpaddr4, page_prio, 4096)
  SET_NAPOT(pmpaddr5, page_prio, 8192)
  /* entries 6-7: page_prio3 allowed RW by entry 6, though entry 7 (both pages) denies */
  SET_NAPOT(pmpaddr6, page_prio3, 4096)
  SET_NAPOT(pmpaddr7, page_prio3, 8192)
  /* entry 15: NAPOT over 16 MiB of RAM, RWX: the program itself (not the devices) */
  li t0, (0x80000000 >> 2) | ((16 << 20) / 8 - 1)
  csrw pmpaddr15, t0
  li t0, (NAPOT | R) | (NA4 | R) << 8 | (TOR | X) << 24 | (NAPOT) << 32 | (NAPOT | R | W) << 40 | (NAPOT | R | W) << 48 | (NAPOT) << 56
  csrw pmpcfg0, t0
  li t0, (NAPOT | R | W | X) << 56
  csrw pmpcfg2, t0
  /* 1-3: the CSRs read back as written */
  csrr a0, pmpcfg0
  CHECK(1, a0, (NAPOT | R) | (NA4 | R) << 8 | (TOR | X) << 24 | (NAPOT) << 32 | (NAPOT | R | W) << 40 | (NAPOT | R | W) << 48 | (NAPOT) << 56)
  csrr a0, pmpcfg2
  CHECK(2, a0, (NAPOT | R | W | X) << 56)
  csrr a0, pmpaddr1
  la t0, page_na4 + 8
  srli t0, t0, 2
  li gp, 3
  bne a0, t0, fail

  /* S-mode: NAPOT R-only page: load yes, store and fetch no */
  ENTER(1, 1f)
1:la s0, page_r
  ld s1, 0(s0)
  BACK_TO_M
  EXPECT_NONE(4)
  CHECK(5, s1, 0x1111)
  ENTER(1, 1f)
1:sd zero, 8(s0)
  BACK_TO_M
  EXPECT_AT(6, 7, page_r + 8)
  ENTER(1, 1f)
1:jalr ra, 0(s0)
  BACK_TO_M
  EXPECT_AT(7, 1, page_r)
  /* NA4 R-only word: 4-byte load yes, 4-byte store no; an 8-byte load half in it fails
     although entry 15 allows the other half; the next word belongs to entry 15 */
  ENTER(1, 1f)
1:la s0, page_na4
  lw s1, 8(s0)
  lw s2, 12(s0)
  sw zero, 12(s0)
  BACK_TO_M
  EXPECT_NONE(8)
  CHECK(9, s1, 0x4444)
  CHECK(10, s2, 0x5555)
  ENTER(1, 1f)
1:sw zero, 8(s0)
  BACK_TO_M
  EXPECT_AT(11, 7, page_na4 + 8)
  ENTER(1, 1f)
1:ld s1, 8(s0)
  BACK_TO_M
  EXPECT_AT(12, 5, page_na4 + 8)
  /* TOR X-only page: fetch yes (it sets s1), load and store no */
  ENTER(1, 1f)
1:la s0, page_x
  li s1, 0
  jalr ra, 0(s0)
  BACK_TO_M
  EXPECT_NONE(13)
  CHECK(14, s1, 0x600d)
  ENTER(1, 1f)
1:lw s1, 0(s0)
  BACK_TO_M
  EXPECT_AT(15, 5, page_x)
  ENTER(1, 1f)
1:sw zero, 4(s0)
  BACK_TO_M
  EXPECT_AT(16, 7, page_x + 4)
  /* priority: the lowest-numbered matching entry decides */
  ENTER(1, 1f)
1:la s0, page_prio
  ld s1, 0(s0)
  BACK_TO_M
  EXPECT_AT(17, 5, page_prio)
  ENTER(1, 1f)
1:la s0, page_prio2
  ld s1, 0(s0)
  sd s1, 0(s0)
  la s0, page_prio3
  ld s2, 0(s0)
  sd s2, 0(s0)
  BACK_TO_M
  EXPECT_NONE(18)
  CHECK(19, s1, 0x2222)
  CHECK(20, s2, 0x3333)
  ENTER(1, 1f)
1:la s0, page_prio4
  sd zero, 0(s0)
  BACK_TO_M
  EXPECT_AT(21, 7, page_prio3 + 4096)
  /* no entry matches (the UART): S fails, M does not */
  ENTER(1, 1f)
1:li s0, UART0 + 5
  lb s1, 0(s0)
  BACK_TO_M
  EXPECT_AT(22, 5, UART0 + 5)
  lb s1, 0(s0)
  EXPECT_NONE(23)

  /* U-mode is held to the same entries */
  ENTER(0, 1f)
1:la s0, page_r
  ld s1, 0(s0)
  la s0, page_x
  li s2, 0
  jalr ra, 0(s0)
  mv s2, s1
  la s0, page_r
  BACK_TO_M
  EXPECT_NONE(24)
  CHECK(25, s2, 0x600d)
  ENTER(0, 1f)
1:sd zero, 0(s0)
  BACK_TO_M
  EXPECT_AT(26, 7, page_r)
  ENTER(0, 1f)
1:la s0, page_x
  ld s1, 0(s0)
  BACK_TO_M
  EXPECT_AT(27, 5, page_x)

  /* M-mode: unlocked entries do not apply */
  la s0, page_r
  sd zero, 16(s0)
  la s0, page_x
  ld s1, 0(s0)
  la s0, page_prio
  ld s1, 0(s0)
  EXPECT_NONE(28)
  /* MPRV = 1: loads and stores are checked as MPP's privilege (S, then U), fetches not */
  MPRV_AS(1)
  la s0, page_r
  sd zero, 16(s0)
  MPRV_OFF
  EXPECT_AT(29, 7, page_r + 16)
  MPRV_AS(0)
  la s0, page_x
  ld s1, 0(s0)
  MPRV_OFF
  EXPECT_AT(30, 5, page_x)
  MPRV_AS(1)
  li s0, UART0 + 5
  lb s1, 0(s0)
  MPRV_OFF
  EXPECT_AT(31, 5, UART0 + 5)
  MPRV_AS(3)
  la s0, page_r
  sd zero, 16(s0)
  MPRV_OFF
  EXPECT_NONE(32)
  MPRV_AS(1)
  la s0, page_x
  li s1, 0
  jalr ra, 0(s0)               /* M fetches from an X-only page: MPRV leaves fetches alone */
  MPRV_OFF
  EXPECT_NONE(33)
  CHECK(34, s1, 0x600d)

  /* Locks (last: only a reset clears them). Entry 8: NAPOT page_lock, R, locked.
     Entry 9: NAPOT page_lockx (code), R, locked. Entries 10-11: TOR page_tor_lock, no
     permissions, entry 11 locked. */
  SET_NAPOT(pmpaddr8, page_lock, 4096)
  SET_NAPOT(pmpaddr9, page_lockx, 4096)
  SET_ADDR(pmpaddr10, page_tor_lock)
  SET_ADDR(pmpaddr11, page_tor_lock + 4096)
  li t0, (NAPOT | R | L) | (NAPOT | R | L) << 8 | (TOR | L) << 24 | (NAPOT | R | W | X) << 56
  csrw pmpcfg2, t0
  /* 35: M-mode loads from the locked R page, but cannot store to it */
  la s0, page_lock
  ld s1, 0(s0)
  EXPECT_NONE(35)
  CHECK(36, s1, 0x6666)
  sd zero, 0(s0)
  EXPECT_AT(37, 7, page_lock)
  /* 38: nor fetch from a locked page without X */
  la s0, page_lockx
  jalr ra, 0(s0)
  EXPECT_AT(38, 1, page_lockx)
  /* 39: the locked TOR region denies M everything */
  la s0, page_tor_lock
  ld s1, 0(s0)
  EXPECT_AT(39, 5, page_tor_lock)
  /* 40: pmpcfg writes to locked entries are ignored (entries 12-15 still take them) */
  li t0, (NAPOT | R | W | X) * 0x0101010101010101
  csrw pmpcfg2, t0
  csrr a0, pmpcfg2
  CHECK(40, a0, (NAPOT | R | L) | (NAPOT | R | L) << 8 | (NAPOT | R | W | X) << 16 | (TOR | L) << 24 | (NAPOT | R | W | X) << 32 | (NAPOT | R | W | X) << 40 | (NAPOT | R | W | X) << 48 | (NAPOT | R | W | X) << 56)
  sd zero, 0(s0)
  la s0, page_lock
  sd zero, 0(s0)
  EXPECT_AT(41, 7, page_lock)
  /* 42: ... and so are pmpaddr writes to a locked entry */
  csrr s1, pmpaddr8
  li t0, -1
  csrw pmpaddr8, t0
  csrr a0, pmpaddr8
  li gp, 42
  bne a0, s1, fail
  /* 43: a locked TOR entry also locks the pmpaddr below it (entry 10, itself unlocked) */
  csrr s1, pmpaddr10
  csrw pmpaddr10, zero
  csrr a0, pmpaddr10
  li gp, 43
  bne a0, s1, fail
  /* 44: entry 10's own pmpcfg byte is not locked: the write above made it NAPOT RWX over
     the 8 bytes its pmpaddr (page_tor_lock >> 2, no trailing ones) names. Being lower than
     entry 11 it now decides there and allows (45); the rest of the locked TOR page still
     denies M (44). */
  la s0, page_tor_lock
  sd zero, 8(s0)
  EXPECT_AT(44, 7, page_tor_lock + 8)
  ld s1, 0(s0)
  sd zero, 0(s0)
  EXPECT_NONE(45)
  RVTEST_PASS
RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_BACK_TO_M_HANDLER

  .data
  .align 12
page_r: .dword 0x1111
  .align 12
page_na4: .dword 0, 0x0000555500004444
  .align 12
page_x:
  li s1, 0x600d
  ret
  .align 13
page_prio: .dword 0
  .align 12
page_prio2: .dword 0x2222
  .align 13
page_prio3: .dword 0x3333
  .align 12
page_prio4: .dword 0
  .align 12
page_lock: .dword 0x6666
  .align 12
page_lockx:
  ret
  .align 12
page_tor_lock: .dword 0
  .align 12
RVTEST_DATA
