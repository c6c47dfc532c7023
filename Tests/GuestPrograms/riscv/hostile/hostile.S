/* The hostile guest (issue 15, host safety) for the RISC-V `virt` board: a bare-metal program
   that does to swemu's devices what a broken or malicious kernel could, and checks afterwards
   that the devices still work. Run by Tests/MachinesTests/HostileGuestTests.swift on both
   engines with every virtio device type attached (blk, net, console, rng, balloon, keyboard)
   and 64 MiB of RAM; the host must keep running, stay bounded in memory, and leave other VMs
   alone.

   The seed of its xorshift64 generator is the first dword of the disk (sector 0), which the
   test writes (and takes from SWEMU_HOSTILE_SEED to replay a run); it is printed first. The
   second dword is the magic "HOSTILE!", dwords 2..511 of sectors 0-7 hold i * GOLDEN.

   Phases:
   A  MMIO fuzz: FUZZ_ITERATIONS random loads and stores of every size (and AMOs, LR/SC and
      instruction fetches) at random offsets of every device window of the board's map (UART,
      PLIC priority/pending/enable/threshold/claim, ACLINT msip/mtimecmp/mtime, goldfish RTC,
      the SiFive test device, the eight virtio-mmio slots with their configuration spaces)
      and of the unmapped gaps below and above RAM, with every interrupt enabled. Accesses to
      nothing are access faults (Privileged spec 3.7.1 and 3.6: PMAs), caught and counted by
      the trap handler, which then steps over the instruction. Stores never write the test
      device's register (offset 0: it would end the run) and, in the virtio register blocks,
      never set bit 31 of a 32-bit value, so a queue address the fuzz happens to set up lies
      below RAM (at worst in the boot ROM) and no device DMA lands on this program.
   B  Virtqueue abuse: every queue of every virtio device, set up properly (virtio 1.2 §3.1,
      §4.2.3), is handed each chain of the `scenarios` table: buffers in MMIO, past the end of
      RAM, wrapping past 2^64, of length 2^32-1, over the rings themselves; descriptor loops;
      next out of range; readable after writable; indirect tables in MMIO, looping, nested, of
      bad lengths (§2.7.5, §2.7.5.3); heads out of range and available index jumps (§2.7.6);
      then rings placed in MMIO, overlapping each other and across the end of RAM; then
      chains of random bytes. Each is notified; the device may use it or enter
      DEVICE_NEEDS_RESET (§2.1.2); the driver then resets it (Status = 0, §2.4).
   C  Resets mid-request: valid requests are made available and notified, then the device is
      reset at once, or after a random delay, or after QueueReady = 0, ROUNDS times per device.
      Then every device must still work: a valid chain comes back used, and virtio-blk
      reads sectors 0-7 back intact (check 1) after writing sector 16 (check 2).
   D  Interrupt storms with a handler: STORM self-IPIs through msip (check 3: each one taken),
      STORM timer interrupts with mtimecmp in the past (check 4), STORM virtio-rng requests
      each ending in a PLIC interrupt the handler claims, acknowledges and completes
      (check 5), UART THRE interrupts (check 6), and goldfish RTC alarms in the past (check 7).

   Then a summary (trap counts by cause, interrupts by cause, devices that asked for a
   reset), "HOSTILE-DONE" and a pass through the test device. A failed check prints
   "HOSTILE-FAIL <n>" and exits with code n. */
#include "test.h"

#define RAM_BASE        0x80000000
#define RAM_END         0x84000000      /* -m 64M */
#define TEST_DEV        0x100000
#define RTC             0x101000
#define CLINT           0x2000000
#define MTIMECMP        0x2004000
#define MTIME           0x200bff8
#define PLIC            0xc000000
#define PLIC_ENABLE0    0xc002000       /* context 0: hart 0 M-mode */
#define PLIC_THRESHOLD0 0xc200000
#define PLIC_CLAIM0     0xc200004
#define VIRTIO0         0x10001000
#define VIRTIO_SLOTS    8

/* virtio-mmio registers (virtio 1.2 §4.2.2) */
#define MAGIC 0x000
#define DEVICE_ID 0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL 0x030
#define QUEUE_NUM_MAX 0x034
#define QUEUE_NUM 0x038
#define QUEUE_READY 0x044
#define QUEUE_NOTIFY 0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK 0x064
#define STATUS 0x070
#define QUEUE_DESC_LOW 0x080
#define QUEUE_DESC_HIGH 0x084
#define QUEUE_DRIVER_LOW 0x090
#define QUEUE_DRIVER_HIGH 0x094
#define QUEUE_DEVICE_LOW 0x0a0
#define QUEUE_DEVICE_HIGH 0x0a4
#define NEEDS_RESET 64

/* Device IDs (§5) */
#define ID_NET 1
#define ID_BLK 2
#define ID_CONSOLE 3
#define ID_RNG 4
#define ID_BALLOON 5
#define ID_INPUT 18

/* Split virtqueue layout (§2.7): QSIZE descriptors; each queue has one page: the descriptor
   table at 0, the available ring at AVAIL, the used ring at USED. */
#define QSIZE 16
#define MAXQ 4
#define AVAIL 0x400
#define USED 0x600
#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

#define GOLDEN 0x9e3779b97f4a7c15
#define DISK_MAGIC 0x21454c4954534f48   /* "HOSTILE!" */
#define FUZZ_ITERATIONS 300000
#define ROUNDS 40
#define STORM 2000
#define WAIT_TICKS 50000000  /* 5 s of mtime (10 MHz) */
#define REGIONS 28          /* entries of `regions` */
#define RING_PLACES 5       /* entries of `ring_places` */
#define SCENARIO_SIZE 136   /* bytes of a `scenarios` entry */

  .option norelax
  .section .text.init
  .globl _start
_start:
  la t0, trap_entry
  csrw mtvec, t0
  la sp, stack_top
  la t0, trap_stack_top
  csrw mscratch, t0
  li gp, 0
  call uart_init
  la a1, s_hello
  call puts

  /* Find the devices: DeviceID per slot (0 for an empty slot, or a slot not mapped at all,
     whose load faults and leaves a0 = 0). */
  la s1, slot_ids
  li s2, 0
1:li t0, 0x1000
  mul t0, t0, s2
  li t1, VIRTIO0
  add t0, t0, t1
  li a0, 0
  lw a0, MAGIC(t0)
  li t1, 0x74726976
  bne a0, t1, 2f
  li a0, 0
  lw a0, DEVICE_ID(t0)
2:slli t1, s2, 3
  add t1, t1, s1
  sd a0, 0(t1)
  addi s2, s2, 1
  li t0, VIRTIO_SLOTS
  bltu s2, t0, 1b

  /* The seed, from the disk. */
  li a0, ID_BLK
  call find_slot
  li gp, 10
  bltz a0, fail_check
  la t0, blk_slot
  sd a0, 0(t0)
  call blk_read_check_setup
  ld t0, 0(a0)
  ld t1, 8(a0)
  li t2, DISK_MAGIC
  li gp, 11
  bne t1, t2, fail_check
  mv s0, t0
  bnez s0, 1f
  li s0, 1                   /* xorshift needs a non-zero state */
1:la a1, s_seed
  call puts
  mv a0, s0
  call puthex
  call newline

  /* Interrupts on: software, timer and external, every PLIC source enabled at priority 1. */
  call plic_enable_all
  li t0, (1 << 3) | (1 << 7) | (1 << 11)
  csrs mie, t0
  csrsi mstatus, 8

  la a1, s_phase_a
  call puts
  call phase_a
  la a1, s_phase_b
  call puts
  call phase_b
  la a1, s_phase_c
  call puts
  call phase_c
  la a1, s_phase_d
  call puts
  call phase_d

  call summary
  la a1, s_done
  call puts
  RVTEST_PASS

/* ---------------------------------------------------------------- helpers */

/* rand: a0 = the next xorshift64 value of s0. */
rand:
  slli t0, s0, 13
  xor s0, s0, t0
  srli t0, s0, 7
  xor s0, s0, t0
  slli t0, s0, 17
  xor s0, s0, t0
  mv a0, s0
  ret

/* The UART as a console again, whatever the fuzz left in it: 8N1 with DLAB off, no loopback,
   no interrupts, FIFOs on. */
uart_init:
  li t0, UART0
  li t1, 3
  sb t1, 3(t0)
  sb zero, 4(t0)
  sb zero, 1(t0)
  li t1, 7
  sb t1, 2(t0)
  ret

putc:
  li t0, UART0
  li t1, 100000
1:lbu t2, 5(t0)
  andi t2, t2, 0x20
  bnez t2, 2f
  addi t1, t1, -1
  bnez t1, 1b
2:sb a0, 0(t0)
  ret

/* puts: a1 = NUL-terminated string. */
puts:
  mv t5, ra
1:lbu a0, 0(a1)
  beqz a0, 2f
  call putc
  addi a1, a1, 1
  j 1b
2:mv ra, t5
  ret

/* puthex: a0 as 0x + 16 hex digits. */
puthex:
  mv t5, ra
  mv t4, a0
  li a0, '0'
  call putc
  li a0, 'x'
  call putc
  li t3, 60
1:srl a0, t4, t3
  andi a0, a0, 15
  li t0, 10
  blt a0, t0, 2f
  addi a0, a0, 'a' - '0' - 10
2:addi a0, a0, '0'
  call putc
  addi t3, t3, -4
  bgez t3, 1b
  mv ra, t5
  ret

newline:
  mv t5, ra
  li a0, '\n'
  call putc
  mv ra, t5
  ret

/* find_slot: a0 = device ID; returns a0 = its slot, or -1. */
find_slot:
  la t0, slot_ids
  li t1, 0
1:ld t2, 0(t0)
  beq t2, a0, 2f
  addi t0, t0, 8
  addi t1, t1, 1
  li t2, VIRTIO_SLOTS
  bltu t1, t2, 1b
  li a0, -1
  ret
2:mv a0, t1
  ret

/* slot_base: a0 = slot; returns a0 = its register window. */
slot_base:
  slli a0, a0, 12
  li t0, VIRTIO0
  add a0, a0, t0
  ret

/* queue_page: a0 = slot, a1 = queue; returns a0 = that queue's page. */
queue_page:
  slli a0, a0, 2
  add a0, a0, a1
  slli a0, a0, 12
  la t0, queues
  add a0, a0, t0
  ret

plic_enable_all:
  li t0, PLIC
  li t1, 1
  li t2, 1
1:slli t3, t2, 2
  add t3, t3, t0
  sw t1, 0(t3)
  addi t2, t2, 1
  li t3, 96
  bltu t2, t3, 1b
  li t0, PLIC_ENABLE0
  li t1, -1
  sw t1, 0(t0)
  sw t1, 4(t0)
  sw t1, 8(t0)
  li t0, PLIC_THRESHOLD0
  sw zero, 0(t0)
  /* Complete every source: the fuzz's reads of claim leave sources in service, and the
     gateway forwards nothing more from them until then (PLIC spec 1.0.0, §7). */
  li t0, PLIC_CLAIM0
  li t2, 1
1:sw t2, 0(t0)
  addi t2, t2, 1
  li t3, 96
  bltu t2, t3, 1b
  ret

fail_check:
  call uart_init
  la a1, s_fail
  call puts
  mv a0, gp
  call puthex
  call newline
  j fail

/* ---------------------------------------------------------------- virtio driver */

/* vinit: a0 = slot. Resets the device and sets it up as §3.1.1 says: ACKNOWLEDGE, DRIVER,
   features (VERSION_1, and INDIRECT_DESC when offered), FEATURES_OK, every queue (up to MAXQ)
   with QSIZE entries in its page, DRIVER_OK. Returns a0 = the number of queues (0 when the
   device refused the features). Keeps s-registers. */
vinit:
  addi sp, sp, -32
  sd ra, 0(sp)
  sd s3, 8(sp)
  sd s4, 16(sp)
  sd s5, 24(sp)
  mv s3, a0
  call slot_base
  mv s4, a0
  sw zero, STATUS(s4)
  li t0, 1
  sw t0, STATUS(s4)
  li t0, 3
  sw t0, STATUS(s4)
  sw zero, DEVICE_FEATURES_SEL(s4)
  lw t1, DEVICE_FEATURES(s4)
  li t0, 1 << 28
  and t1, t1, t0
  sw zero, DRIVER_FEATURES_SEL(s4)
  sw t1, DRIVER_FEATURES(s4)
  li t0, 1
  sw t0, DRIVER_FEATURES_SEL(s4)
  sw t0, DRIVER_FEATURES(s4)
  li t0, 11
  sw t0, STATUS(s4)
  lw t0, STATUS(s4)
  andi t0, t0, 8
  li a0, 0
  beqz t0, 9f
  li s5, 0
1:sw s5, QUEUE_SEL(s4)
  lw t0, QUEUE_NUM_MAX(s4)
  li t1, QSIZE
  bltu t0, t1, 3f
  mv a0, s3
  mv a1, s5
  call queue_page
  /* a fresh page: no stale ring indices */
  mv t0, a0
  li t1, 512
2:sd zero, 0(t0)
  addi t0, t0, 8
  addi t1, t1, -1
  bnez t1, 2b
  li t0, QSIZE
  sw t0, QUEUE_NUM(s4)
  sw a0, QUEUE_DESC_LOW(s4)
  sw zero, QUEUE_DESC_HIGH(s4)
  addi t0, a0, AVAIL
  sw t0, QUEUE_DRIVER_LOW(s4)
  sw zero, QUEUE_DRIVER_HIGH(s4)
  addi t0, a0, USED
  sw t0, QUEUE_DEVICE_LOW(s4)
  sw zero, QUEUE_DEVICE_HIGH(s4)
  li t0, 1
  sw t0, QUEUE_READY(s4)
  addi s5, s5, 1
  li t0, MAXQ
  bltu s5, t0, 1b
3:li t0, 15
  sw t0, STATUS(s4)
  mv a0, s5
9:ld ra, 0(sp)
  ld s3, 8(sp)
  ld s4, 16(sp)
  ld s5, 24(sp)
  addi sp, sp, 32
  ret

/* post: a0 = queue page, a1 = head. Makes the chain at `head` available (§2.7.13). */
post:
  lhu t0, AVAIL+2(a0)
  andi t1, t0, QSIZE - 1
  slli t1, t1, 1
  add t1, t1, a0
  sh a1, AVAIL+4(t1)
  fence w, w
  addi t0, t0, 1
  sh t0, AVAIL+2(a0)
  fence w, w
  ret

/* wait_used: a0 = queue page, a1 = the used idx to reach; returns a0 = 1 if it was reached
   within WAIT_TICKS of mtime, else 0. virtio-blk completes on an I/O thread, so the wait is
   in time, not in iterations (the JIT spins many times faster than the interpreter). */
wait_used:
  li t1, MTIME
  ld t2, 0(t1)
  li t0, WAIT_TICKS
  add t2, t2, t0
1:lhu t0, USED+2(a0)
  beq t0, a1, 2f
  ld t0, 0(t1)
  bltu t0, t2, 1b
  li a0, 0
  ret
2:fence r, r
  li a0, 1
  ret

/* desc: a0 = queue page, a1 = index, a2 = address, a3 = length, a4 = flags, a5 = next. */
desc:
  slli t0, a1, 4
  add t0, t0, a0
  sd a2, 0(t0)
  sw a3, 8(t0)
  sh a4, 12(t0)
  sh a5, 14(t0)
  ret

/* valid_request: a0 = slot, a1 = its device ID. Builds, at descriptors 0-2 of queue q of the
   slot, a request the device must take, and returns a0 = q (descriptor 0 is its head):
   blk: read of sectors 0-7 into dma_buf; net: a 60-byte frame after the 12-byte header on
   the transmit queue; console: text on the transmit queue; rng: 64 bytes; balloon: inflate
   of a page past the end of RAM (§5.5.6: ignored; no page of this program goes); input: an
   LED event on the status queue. */
valid_request:
  addi sp, sp, -32
  sd ra, 0(sp)
  sd s3, 8(sp)
  sd s4, 16(sp)
  mv s3, a1
  li a1, 0
  li t0, ID_NET
  beq s3, t0, 1f
  li t0, ID_CONSOLE
  beq s3, t0, 1f
  li t0, ID_INPUT
  beq s3, t0, 1f
  j 2f
1:li a1, 1
2:mv s4, a1
  call queue_page
  li t0, ID_BLK
  beq s3, t0, 3f
  li t0, ID_RNG
  beq s3, t0, 4f
  li t0, ID_BALLOON
  beq s3, t0, 5f
  /* net, console, input: one readable buffer from tx_buf */
  li a1, 0
  la a2, tx_buf
  li a3, 72
  li t0, ID_INPUT
  bne s3, t0, 6f
  li a3, 8
6:li a4, 0
  li a5, 0
  call desc
  j 9f
3:la t0, blk_req
  sw zero, 0(t0)            /* VIRTIO_BLK_T_IN */
  sw zero, 4(t0)
  sd zero, 8(t0)
  li a1, 0
  mv a2, t0
  li a3, 16
  li a4, F_NEXT
  li a5, 1
  call desc
  li a1, 1
  la a2, dma_buf
  li a3, 4096
  li a4, F_NEXT | F_WRITE
  li a5, 2
  call desc
  li a1, 2
  la a2, blk_status
  li t0, 0xff
  sb t0, 0(a2)
  li a3, 1
  li a4, F_WRITE
  li a5, 0
  call desc
  j 9f
4:li a1, 0
  la a2, dma_buf
  li a3, 64
  li a4, F_WRITE
  li a5, 0
  call desc
  j 9f
5:la t0, pfn_buf
  li t1, RAM_END >> 12
  sw t1, 0(t0)
  li a1, 0
  mv a2, t0
  li a3, 4
  li a4, 0
  li a5, 0
  call desc
9:mv a0, s4
  ld ra, 0(sp)
  ld s3, 8(sp)
  ld s4, 16(sp)
  addi sp, sp, 32
  ret

/* works: a0 = slot. Sets the device up, hands it a valid request and checks it comes back
   used; returns a0 = 1 if it did. */
works:
  addi sp, sp, -48
  sd ra, 0(sp)
  sd s3, 8(sp)
  sd s4, 16(sp)
  sd s5, 24(sp)
  mv s3, a0
  call vinit
  beqz a0, 8f
  slli t0, s3, 3
  la t1, slot_ids
  add t0, t0, t1
  ld a1, 0(t0)
  mv a0, s3
  call valid_request
  mv s4, a0                 /* queue */
  mv a0, s3
  mv a1, s4
  call queue_page
  mv s5, a0
  li a1, 0
  call post
  mv a0, s3
  call slot_base
  sw s4, QUEUE_NOTIFY(a0)
  mv a0, s5
  li a1, 1
  call wait_used
  j 9f
8:li a0, 0
9:ld ra, 0(sp)
  ld s3, 8(sp)
  ld s4, 16(sp)
  ld s5, 24(sp)
  addi sp, sp, 48
  ret

/* blk_read_check_setup: reads sectors 0-7 of the disk into dma_buf through a fresh device;
   returns a0 = dma_buf. Check 12 if the request does not complete with status OK. */
blk_read_check_setup:
  addi sp, sp, -16
  sd ra, 0(sp)
  la t0, blk_slot
  ld a0, 0(t0)
  call works
  li gp, 12
  beqz a0, fail_check
  la t0, blk_status
  lbu t0, 0(t0)
  bnez t0, fail_check
  la a0, dma_buf
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

/* ---------------------------------------------------------------- trap handler */

/* Exceptions: counted by cause; execution goes on after the instruction (instruction fetch
   faults: at ra, as the fuzz jumps with jalr ra). Interrupts: counted by cause and quieted:
   msip cleared, mtimecmp set to the end of time, an external interrupt claimed and completed;
   outside the storms the PLIC source is masked too (the fuzz may keep a device's line high),
   in them the device is acknowledged instead (virtio InterruptACK, UART IIR, RTC
   CLEAR_INTERRUPT). Its own stack is in mscratch; it touches only mapped devices. */
  .align 2
trap_entry:
  csrrw sp, mscratch, sp
  addi sp, sp, -64
  sd t0, 0(sp)
  sd t1, 8(sp)
  sd t2, 16(sp)
  sd t3, 24(sp)
  sd t4, 32(sp)
  sd a0, 40(sp)
  sd a1, 48(sp)
  sd ra, 56(sp)
  csrr t0, mcause
  bltz t0, interrupt
  andi t1, t0, 15
  slli t1, t1, 3
  la t2, exception_counts
  add t2, t2, t1
  ld t3, 0(t2)
  addi t3, t3, 1
  sd t3, 0(t2)
  li t1, 1
  beq t0, t1, 2f
  li t1, 12
  beq t0, t1, 2f
  csrr t1, mepc
  lhu t2, 0(t1)
  andi t2, t2, 3
  li t3, 3
  addi t1, t1, 2
  bne t2, t3, 1f
  addi t1, t1, 2
1:csrw mepc, t1
  j trap_out
2:csrw mepc, ra
  j trap_out
interrupt:
  andi t1, t0, 15
  slli t2, t1, 3
  la t3, interrupt_counts
  add t3, t3, t2
  ld t4, 0(t3)
  addi t4, t4, 1
  sd t4, 0(t3)
  li t2, 3
  beq t1, t2, msi
  li t2, 7
  beq t1, t2, mti
  li t2, 11
  beq t1, t2, mei
  li t2, 1
  sll t2, t2, t1
  csrc mie, t2
  j trap_out
msi:
  li t2, CLINT
  sw zero, 0(t2)
  j trap_out
mti:
  li t2, MTIMECMP
  li t3, -1
  sd t3, 0(t2)
  j trap_out
mei:
  li t2, PLIC_CLAIM0
  lwu a0, 0(t2)
  beqz a0, trap_out
  la t3, source_counts
  andi t4, a0, 127
  slli t4, t4, 3
  add t3, t3, t4
  ld t4, 0(t3)
  addi t4, t4, 1
  sd t4, 0(t3)
  la t3, storm_mode
  ld t3, 0(t3)
  beqz t3, mask
  addi t3, a0, -1
  li t4, VIRTIO_SLOTS
  bgeu t3, t4, 3f
  slli t3, t3, 12
  li t4, VIRTIO0
  add t3, t3, t4
  lw t4, INTERRUPT_STATUS(t3)
  sw t4, INTERRUPT_ACK(t3)
  j complete
3:li t4, 10
  bne a0, t4, 4f
  li t3, UART0
  lbu t4, 2(t3)
  lbu t4, 5(t3)
  lbu t4, 6(t3)
  j complete
4:li t4, 11
  bne a0, t4, mask
  li t3, RTC
  li t4, 1
  sw t4, 0x1c(t3)
  j complete
mask:
  srli t3, a0, 5
  slli t3, t3, 2
  li t4, PLIC_ENABLE0
  add t3, t3, t4
  lw t4, 0(t3)
  andi t1, a0, 31
  li a1, 1
  sll a1, a1, t1
  not a1, a1
  and t4, t4, a1
  sw t4, 0(t3)
complete:
  sw a0, 0(t2)
trap_out:
  ld t0, 0(sp)
  ld t1, 8(sp)
  ld t2, 16(sp)
  ld t3, 24(sp)
  ld t4, 32(sp)
  ld a0, 40(sp)
  ld a1, 48(sp)
  ld ra, 56(sp)
  addi sp, sp, 64
  csrrw sp, mscratch, sp
  mret

/* ---------------------------------------------------------------- phase A: MMIO fuzz */

phase_a:
  addi sp, sp, -16
  sd ra, 0(sp)
  li s1, FUZZ_ITERATIONS
fuzz_next:
  call rand
  li t0, REGIONS
  remu t0, a0, t0
  slli t0, t0, 4
  la t1, regions
  add t1, t1, t0
  ld s2, 0(t1)               /* base */
  ld s3, 8(t1)               /* span */
  call rand
  remu t0, a0, s3
  add s2, s2, t0             /* the address */
  call rand
  mv s4, a0                  /* the value */
  call rand
  andi s5, a0, 3             /* log2 of the size */
  srli a0, a0, 2
  andi s6, a0, 15            /* the operation */
  /* no store reaches the test device's register */
  li t0, TEST_DEV
  sub t1, s2, t0
  li t0, 8
  bgeu t1, t0, 1f
  addi s2, s2, 8
1:/* virtio registers: bit 31 of a 32-bit value clear (see the top) */
  li t0, VIRTIO0
  sub t1, s2, t0
  li t0, VIRTIO_SLOTS << 12
  bgeu t1, t0, 2f
  li t0, 0x7fffffff
  and s4, s4, t0
2:li t0, 6
  bltu s6, t0, fuzz_store
  li t0, 12
  bltu s6, t0, fuzz_load
  li t0, 13
  beq s6, t0, fuzz_amo
  li t0, 14
  beq s6, t0, fuzz_lrsc
  /* an instruction fetch: from anything but RAM or the boot ROM */
  li t0, TEST_DEV
  bltu s2, t0, fuzz_done
  jalr ra, 0(s2)
  j fuzz_done
fuzz_store:
  li t0, 1
  beq s5, t0, 2f
  li t0, 2
  beq s5, t0, 4f
  li t0, 3
  beq s5, t0, 8f
  sb s4, 0(s2)
  j fuzz_done
2:sh s4, 0(s2)
  j fuzz_done
4:sw s4, 0(s2)
  j fuzz_done
8:sd s4, 0(s2)
  j fuzz_done
fuzz_load:
  li t0, 1
  beq s5, t0, 2f
  li t0, 2
  beq s5, t0, 4f
  li t0, 3
  beq s5, t0, 8f
  lb a2, 0(s2)
  j fuzz_done
2:lhu a2, 0(s2)
  j fuzz_done
4:lw a2, 0(s2)
  j fuzz_done
8:ld a2, 0(s2)
  j fuzz_done
fuzz_amo:
  andi t0, s5, 1
  bnez t0, 1f
  amoswap.w a2, s4, (s2)
  j fuzz_done
1:amoadd.d a2, s4, (s2)
  j fuzz_done
fuzz_lrsc:
  lr.d a2, (s2)
  sc.d a2, s4, (s2)
fuzz_done:
  addi s1, s1, -1
  bnez s1, fuzz_next
  /* What the fuzz left: a console again, and every source back on. */
  call uart_init
  call plic_enable_all
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

/* ---------------------------------------------------------------- phase B: virtqueue abuse */

/* fixup: a0 = a scenario's address field; small values name places known only at run time:
   1 this queue's page (the rings), 2 dma_buf (RAM), 3 the indirect table (RAM), 4 a valid
   virtio-blk read header; s7 = the queue page. Returns the address. */
fixup:
  li t0, 1
  bne a0, t0, 1f
  mv a0, s7
  ret
1:li t0, 2
  bne a0, t0, 2f
  la a0, dma_buf
  ret
2:li t0, 3
  bne a0, t0, 3f
  la a0, indirect_table
  ret
3:li t0, 4
  bne a0, t0, 4f
  la a0, blk_req
  sw zero, 0(a0)
  sw zero, 4(a0)
  sd zero, 8(a0)
4:ret

/* copy_descs: a0 = 4 scenario descriptors, a1 = where they go (with fixups). */
copy_descs:
  addi sp, sp, -32
  sd ra, 0(sp)
  sd s8, 8(sp)
  sd s9, 16(sp)
  sd s10, 24(sp)
  mv s8, a0
  mv s9, a1
  li s10, 4
1:ld a0, 0(s8)
  call fixup
  sd a0, 0(s9)
  lw t0, 8(s8)
  sw t0, 8(s9)
  lw t0, 12(s8)
  sw t0, 12(s9)
  addi s8, s8, 16
  addi s9, s9, 16
  addi s10, s10, -1
  bnez s10, 1b
  ld ra, 0(sp)
  ld s8, 8(sp)
  ld s9, 16(sp)
  ld s10, 24(sp)
  addi sp, sp, 32
  ret

/* after_abuse: a0 = slot base. Counts the device asking for a reset, then resets it. */
after_abuse:
  lw t0, STATUS(a0)
  andi t0, t0, NEEDS_RESET
  beqz t0, 1f
  la t1, needs_reset_count
  ld t2, 0(t1)
  addi t2, t2, 1
  sd t2, 0(t1)
1:sw zero, STATUS(a0)
  ret

phase_b:
  addi sp, sp, -16
  sd ra, 0(sp)
  li s1, 0                   /* slot */
b_slot:
  slli t0, s1, 3
  la t1, slot_ids
  add t0, t0, t1
  ld t0, 0(t0)
  beqz t0, b_next_slot
  mv a0, s1
  call vinit
  mv s2, a0                  /* its queues */
  li s3, 0                   /* queue */
b_queue:
  bgeu s3, s2, b_next_slot
  /* the scenario table */
  la s4, scenarios
b_scenario:
  ld t0, 0(s4)
  li t1, -1
  beq t0, t1, b_rings
  mv a0, s1
  call vinit
  mv a0, s1
  mv a1, s3
  call queue_page
  mv s7, a0
  mv a0, s4
  mv a1, s7
  call copy_descs
  addi a0, s4, 64
  la a1, indirect_table
  call copy_descs
  lhu t0, 128(s4)            /* head */
  sh t0, AVAIL+4(s7)
  fence w, w
  lhu t0, 130(s4)            /* avail idx */
  sh t0, AVAIL+2(s7)
  fence w, w
  mv a0, s1
  call slot_base
  mv s5, a0
  sw s3, QUEUE_NOTIFY(s5)
  mv a0, s7
  li a1, 1
  li t1, 20000
1:lhu t0, USED+2(a0)        /* a short wait for a device on another thread */
  bnez t0, 2f
  addi t1, t1, -1
  bnez t1, 1b
2:mv a0, s5
  call after_abuse
  addi s4, s4, SCENARIO_SIZE
  j b_scenario
b_rings:
  /* Rings the device must refuse or survive: in MMIO, across the end of RAM, all three on
     one page; QueueReady then makes the device check them (§4.2.3.2). */
  li s4, 0
b_ring_next:
  mv a0, s1
  call vinit
  mv a0, s1
  call slot_base
  mv s5, a0
  sw zero, STATUS(s5)
  li t0, 3
  sw t0, STATUS(s5)
  li t0, 1
  sw t0, DRIVER_FEATURES_SEL(s5)
  sw t0, DRIVER_FEATURES(s5)
  li t0, 11
  sw t0, STATUS(s5)
  sw s3, QUEUE_SEL(s5)
  li t0, QSIZE
  sw t0, QUEUE_NUM(s5)
  slli t0, s4, 3
  la t1, ring_places
  add t0, t0, t1
  ld t0, 0(t0)
  bnez t0, 1f
  mv a0, s1
  mv a1, s3
  call queue_page
  mv t0, a0                  /* 0: this queue's own page, for all three, avail idx 1 */
  li t1, 1
  sh t1, 2(t0)
1:sw t0, QUEUE_DESC_LOW(s5)
  sw t0, QUEUE_DRIVER_LOW(s5)
  sw t0, QUEUE_DEVICE_LOW(s5)
  srli t1, t0, 32
  sw t1, QUEUE_DESC_HIGH(s5)
  sw t1, QUEUE_DRIVER_HIGH(s5)
  sw t1, QUEUE_DEVICE_HIGH(s5)
  li t0, 1
  sw t0, QUEUE_READY(s5)
  li t0, 15
  sw t0, STATUS(s5)
  sw s3, QUEUE_NOTIFY(s5)
  mv a0, s5
  call after_abuse
  addi s4, s4, 1
  li t0, RING_PLACES
  bltu s4, t0, b_ring_next
  /* Chains of random bytes: the whole descriptor table and indirect table random, heads
     and the available index random within the ring. */
  li s4, 32
b_random:
  mv a0, s1
  call vinit
  mv a0, s1
  mv a1, s3
  call queue_page
  mv s7, a0
  mv s8, a0
  li s9, (QSIZE * 16) / 8
1:call rand
  sd a0, 0(s8)
  addi s8, s8, 8
  addi s9, s9, -1
  bnez s9, 1b
  /* Half the time, point the random descriptors' addresses at RAM (dma_buf), so that the
     lengths, flags and next fields get to the device's checks. */
  call rand
  andi t0, a0, 1
  beqz t0, 3f
  mv s8, s7
  li s9, QSIZE
2:la t0, dma_buf
  sd t0, 0(s8)
  lwu t0, 8(s8)
  li t1, 0xfff
  and t0, t0, t1
  sw t0, 8(s8)
  addi s8, s8, 16
  addi s9, s9, -1
  bnez s9, 2b
3:la s8, indirect_table
  li s9, 8
4:call rand
  sd a0, 0(s8)
  addi s8, s8, 8
  addi s9, s9, -1
  bnez s9, 4b
  call rand
  andi a1, a0, QSIZE - 1
  mv a0, s7
  call post
  mv a0, s1
  call slot_base
  mv s5, a0
  sw s3, QUEUE_NOTIFY(s5)
  mv a0, s5
  call after_abuse
  addi s4, s4, -1
  bnez s4, b_random
  addi s3, s3, 1
  j b_queue
b_next_slot:
  addi s1, s1, 1
  li t0, VIRTIO_SLOTS
  bltu s1, t0, b_slot
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

/* ---------------------------------------------------------------- phase C: resets mid-request */

phase_c:
  addi sp, sp, -16
  sd ra, 0(sp)
  li s1, 0
c_slot:
  slli t0, s1, 3
  la t1, slot_ids
  add t0, t0, t1
  ld s6, 0(t0)               /* device ID */
  beqz s6, c_next_slot
  li s2, ROUNDS
c_round:
  mv a0, s1
  call vinit
  beqz a0, c_next_round
  mv a0, s1
  mv a1, s6
  call valid_request
  mv s3, a0                  /* queue */
  mv a0, s1
  mv a1, s3
  call queue_page
  mv s7, a0
  /* the same request made available five times (the device may take them all) */
  li s4, 5
1:mv a0, s7
  li a1, 0
  call post
  addi s4, s4, -1
  bnez s4, 1b
  mv a0, s1
  call slot_base
  mv s5, a0
  sw s3, QUEUE_NOTIFY(s5)
  andi t0, s2, 3
  beqz t0, 3f               /* round % 4 == 0: reset at once */
  li t1, 1
  beq t0, t1, 4f
  li t1, 2
  beq t0, t1, 5f
  /* 3: notify again, then QueueReady = 0 before the reset */
  sw s3, QUEUE_NOTIFY(s5)
  sw s3, QUEUE_SEL(s5)
  sw zero, QUEUE_READY(s5)
  j 3f
4:/* 1: a random delay */
  call rand
  andi t0, a0, 1023
2:addi t0, t0, -1
  bgez t0, 2b
  j 3f
5:/* 2: with a used buffer notification pending, unacknowledged */
  mv a0, s7
  li a1, 1
  li t1, 20000
6:lhu t0, USED+2(a0)
  bnez t0, 3f
  addi t1, t1, -1
  bnez t1, 6b
3:sw zero, STATUS(s5)
c_next_round:
  addi s2, s2, -1
  bnez s2, c_round
  /* After all that, the device works. */
  mv a0, s1
  call works
  li gp, 20
  add gp, gp, s6             /* check 20 + device ID: that device no longer works */
  beqz a0, fail_check
c_next_slot:
  addi s1, s1, 1
  li t0, VIRTIO_SLOTS
  bltu s1, t0, c_slot
  /* virtio-blk writes sector 16 and reads sectors 0-7 back intact. */
  call blk_write_16
  call blk_read_check_setup
  li t0, DISK_MAGIC
  ld t1, 8(a0)
  li gp, 1
  bne t0, t1, fail_check
  li t2, 2
  li t3, GOLDEN
1:slli t4, t2, 3
  add t4, t4, a0
  ld t4, 0(t4)
  mul t5, t2, t3
  bne t4, t5, fail_check
  addi t2, t2, 1
  li t0, 512
  bltu t2, t0, 1b
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

/* blk_write_16: writes 512 bytes of dma_buf to sector 16; check 2 unless it completes OK. */
blk_write_16:
  addi sp, sp, -16
  sd ra, 0(sp)
  la t0, blk_slot
  ld a0, 0(t0)
  call vinit
  li gp, 2
  beqz a0, fail_check
  la t0, blk_slot
  ld a0, 0(t0)
  li a1, 0
  call queue_page
  mv s7, a0
  la t0, blk_req
  li t1, 1                   /* VIRTIO_BLK_T_OUT */
  sw t1, 0(t0)
  sw zero, 4(t0)
  li t1, 16
  sd t1, 8(t0)
  li a1, 0
  mv a2, t0
  li a3, 16
  li a4, F_NEXT
  li a5, 1
  call desc
  li a1, 1
  la a2, dma_buf
  li a3, 512
  li a4, F_NEXT
  li a5, 2
  call desc
  li a1, 2
  la a2, blk_status
  li t0, 0xff
  sb t0, 0(a2)
  li a3, 1
  li a4, F_WRITE
  li a5, 0
  call desc
  li a1, 0
  call post
  la t0, blk_slot
  ld a0, 0(t0)
  call slot_base
  sw zero, QUEUE_NOTIFY(a0)
  mv a0, s7
  li a1, 1
  call wait_used
  li gp, 2
  beqz a0, fail_check
  la t0, blk_status
  lbu t0, 0(t0)
  bnez t0, fail_check
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

/* ---------------------------------------------------------------- phase D: interrupt storms */

/* LOAD_COUNT: reg = table[index], a counter the trap handler moves. */
#define LOAD_COUNT(reg, table, index) la reg, table; ld reg, (8 * (index))(reg)

phase_d:
  addi sp, sp, -16
  sd ra, 0(sp)
  la t0, storm_mode
  li t1, 1
  sd t1, 0(t0)
  call plic_enable_all
  /* Self-IPIs: each msip store raises MSIP, taken (Privileged 3.1.9) before the next store. */
  LOAD_COUNT(s2, interrupt_counts, 3)
  li s1, STORM
1:li t0, CLINT
  li t1, 1
  sw t1, 0(t0)
  li t2, 1000
2:LOAD_COUNT(t1, interrupt_counts, 3)
  sub t1, t1, s2
  li t3, STORM + 1
  sub t3, t3, s1
  bgeu t1, t3, 3f
  addi t2, t2, -1
  bnez t2, 2b
3:addi s1, s1, -1
  bnez s1, 1b
  LOAD_COUNT(s3, interrupt_counts, 3)
  sub s3, s3, s2
  li gp, 3
  li t0, STORM
  bltu s3, t0, fail_check
  /* Timer interrupts, mtimecmp in the past (0): pending at once, until the handler moves it. */
  LOAD_COUNT(s2, interrupt_counts, 7)
  li s1, STORM
  li t0, MTIMECMP
1:sd zero, 0(t0)
  li t2, 1000
2:addi t2, t2, -1            /* the interrupt may come a few instructions later */
  ld t1, 0(t0)
  addi t1, t1, 1
  beqz t1, 3f
  bnez t2, 2b
3:addi s1, s1, -1
  bnez s1, 1b
  LOAD_COUNT(s3, interrupt_counts, 7)
  sub s3, s3, s2
  li gp, 4
  li t0, STORM
  bltu s3, t0, fail_check
  /* virtio-rng requests, each completion a PLIC interrupt (source = slot + 1). */
  li a0, ID_RNG
  call find_slot
  li gp, 5
  bltz a0, fail_check
  mv s4, a0
  call vinit
  addi s5, s4, 1
  slli s5, s5, 3
  la t0, source_counts
  add s5, s5, t0
  ld s2, 0(s5)
  mv a0, s4
  li a1, 0
  call queue_page
  mv s7, a0
  li a1, 0
  la a2, dma_buf
  li a3, 16
  li a4, F_WRITE
  li a5, 0
  call desc
  mv a0, s4
  call slot_base
  mv s6, a0
  li s1, STORM
1:mv a0, s7
  li a1, 0
  call post
  sw zero, QUEUE_NOTIFY(s6)
  li t2, 100000
2:ld t1, 0(s5)              /* the interrupt is taken, the device acknowledged */
  sub t1, t1, s2
  li t3, STORM + 1
  sub t3, t3, s1
  bgeu t1, t3, 3f
  addi t2, t2, -1
  bnez t2, 2b
3:addi s1, s1, -1
  bnez s1, 1b
  ld s3, 0(s5)
  sub s3, s3, s2
  li gp, 5
  li t0, STORM
  bltu s3, t0, fail_check
  /* UART THRE interrupts (16550: one each time the holding register empties, cleared by
     reading IIR): 200 characters, each with its interrupt. */
  LOAD_COUNT(s2, source_counts, 10)
  li t0, UART0
  li t1, 2
  sb t1, 1(t0)
  li s1, 200
1:li a0, '~'
  call putc
  li t2, 100000
2:LOAD_COUNT(t1, source_counts, 10)
  sub t1, t1, s2
  li t3, 201
  sub t3, t3, s1
  bgeu t1, t3, 3f
  addi t2, t2, -1
  bnez t2, 2b
3:addi s1, s1, -1
  bnez s1, 1b
  li t0, UART0
  sb zero, 1(t0)
  call newline
  LOAD_COUNT(s3, source_counts, 10)
  sub s3, s3, s2
  li gp, 6
  li t0, 200
  bltu s3, t0, fail_check
  /* Goldfish RTC alarms in the past: armed (ALARM_HIGH, then ALARM_LOW) at 0, fired at the
     next poll, cleared by CLEAR_INTERRUPT. */
  LOAD_COUNT(s2, source_counts, 11)
  li t0, RTC
  li t1, 1
  sw t1, 0x10(t0)
  li s1, 100
1:li t0, RTC
  sw zero, 0x0c(t0)
  sw zero, 0x08(t0)
  li t2, 50000000
2:LOAD_COUNT(t1, source_counts, 11)
  sub t1, t1, s2
  li t3, 101
  sub t3, t3, s1
  bgeu t1, t3, 3f
  addi t2, t2, -1
  bnez t2, 2b
3:addi s1, s1, -1
  bnez s1, 1b
  li t0, RTC
  sw zero, 0x10(t0)
  LOAD_COUNT(s3, source_counts, 11)
  sub s3, s3, s2
  li gp, 7
  li t0, 100
  bltu s3, t0, fail_check
  la t0, storm_mode
  sd zero, 0(t0)
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

/* ---------------------------------------------------------------- summary */

/* print_counts: a1 = label, a2 = table of 16 counters; prints "label i=n" for each non-zero. */
print_counts:
  addi sp, sp, -32
  sd ra, 0(sp)
  sd s8, 8(sp)
  sd s9, 16(sp)
  mv s8, a2
  call puts
  li s9, 0
1:slli t0, s9, 3
  add t0, t0, s8
  ld t0, 0(t0)
  beqz t0, 2f
  li a0, ' '
  call putc
  mv a0, s9
  call puthex
  li a0, '='
  call putc
  slli t0, s9, 3
  add t0, t0, s8
  ld a0, 0(t0)
  call puthex
2:addi s9, s9, 1
  li t0, 16
  bltu s9, t0, 1b
  call newline
  ld ra, 0(sp)
  ld s8, 8(sp)
  ld s9, 16(sp)
  addi sp, sp, 32
  ret

summary:
  addi sp, sp, -16
  sd ra, 0(sp)
  la a1, s_exceptions
  la a2, exception_counts
  call print_counts
  la a1, s_interrupts
  la a2, interrupt_counts
  call print_counts
  la a1, s_needs_reset
  call puts
  la t0, needs_reset_count
  ld a0, 0(t0)
  call puthex
  call newline
  ld ra, 0(sp)
  addi sp, sp, 16
  ret

RVTEST_FAIL_CODE

  .section .rodata
s_hello: .asciz "hostile guest\n"
s_seed: .asciz "HOSTILE seed="
s_phase_a: .asciz "phase A: MMIO fuzz\n"
s_phase_b: .asciz "phase B: virtqueue abuse\n"
s_phase_c: .asciz "phase C: resets mid-request\n"
s_phase_d: .asciz "phase D: interrupt storms\n"
s_exceptions: .asciz "exceptions by cause:"
s_interrupts: .asciz "interrupts by cause:"
s_needs_reset: .asciz "DEVICE_NEEDS_RESET seen: "
s_done: .asciz "HOSTILE-DONE\n"
s_fail: .asciz "HOSTILE-FAIL "

/* The fuzz targets: base and span. */
  .balign 8
regions:
  .dword 0x0, 0x1000                  /* below the boot ROM: nothing */
  .dword 0x2000, 0xfe000              /* between the ROM and the test device: nothing */
  .dword TEST_DEV, 0x1000
  .dword RTC, 0x1000
  .dword 0x102000, 0x1efe000          /* up to the ACLINT: nothing */
  .dword CLINT, 0x1000                /* msip */
  .dword MTIMECMP, 0x1000
  .dword 0x200b000, 0x1000            /* mtime at 0xbff8 */
  .dword CLINT, 0x10000
  .dword PLIC, 0x1000                 /* priorities */
  .dword PLIC + 0x1000, 0x1000        /* pending */
  .dword PLIC_ENABLE0, 0x1000         /* enables, every context */
  .dword PLIC_THRESHOLD0, 0x2000      /* threshold and claim/complete, contexts 0 and 1 */
  .dword PLIC, 0x600000
  .dword UART0, 0x100
  .dword UART0, 0x1000
  .dword VIRTIO0 + 0x0000, 0x200
  .dword VIRTIO0 + 0x1000, 0x200
  .dword VIRTIO0 + 0x2000, 0x200
  .dword VIRTIO0 + 0x3000, 0x200
  .dword VIRTIO0 + 0x4000, 0x200
  .dword VIRTIO0 + 0x5000, 0x200
  .dword VIRTIO0 + 0x6000, 0x200
  .dword VIRTIO0 + 0x7000, 0x200
  .dword VIRTIO0, 0x8000
  .dword 0x10009000, 0x6fff7000       /* up to RAM: nothing */
  .dword RAM_END, 0x100000000         /* past RAM */
  .dword 0xfffffffffff00000, 0xfffff  /* the top of the address space */
regions_end:

/* Rings: 0 = all three on the queue's own page; then MMIO, across the end of RAM, past it,
   and unaligned. */
ring_places:
  .dword 0, UART0, RAM_END - 0x100, RAM_END, 0x80000002

/* Scenarios: 4 descriptors for the queue, 4 for the indirect table (addr, len, flags, next),
   the head and the available idx. Addresses 1-4 are fixed up (see fixup). */
#define D(addr, len, flags, next) .dword addr; .word len; .half flags, next
#define NONE D(0, 0, 0, 0)
#define SC(head, idx) .half head, idx; .word 0
  .balign 8
scenarios:
  /* buffers in MMIO, writable and readable */
  D(UART0, 16, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(UART0, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(PLIC_CLAIM0, 4, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  /* past the end of RAM, across it, wrapping past 2^64, 2^32 - 1 bytes */
  D(RAM_END, 512, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(RAM_END - 256, 512, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(0xfffffffffffff000, 0x2000, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(0xfffffffffffff000, 0x2000, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(RAM_BASE, 0xffffffff, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(0x1000, 0x1000, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  /* over the rings: a read header, then the queue's own page as the data, then a status */
  D(4, 16, F_NEXT, 1); D(1, 4096, F_NEXT | F_WRITE, 2); D(2, 1, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(1, 4096, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(1, 4096, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  /* descriptor loops: 0 -> 1 -> 0, and 0 -> 0; a long chain into a loop of writables */
  D(2, 16, F_NEXT, 1); D(2, 16, F_NEXT, 0); NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(2, 16, F_NEXT | F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(4, 16, F_NEXT, 1); D(2, 512, F_NEXT | F_WRITE, 2); D(2, 512, F_NEXT | F_WRITE, 3); D(2, 1, F_NEXT | F_WRITE, 1); NONE; NONE; NONE; NONE; SC(0, 1)
  /* next out of range, readable after writable, zero lengths */
  D(2, 16, F_NEXT, 0x1234); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(2, 16, F_NEXT | F_WRITE, 1); D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(2, 0, F_NEXT, 1); D(2, 0, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  /* indirect tables: in MMIO, past RAM, of bad lengths, looping, nested, with NEXT */
  D(UART0, 64, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(RAM_END - 32, 64, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(3, 0, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(3, 24, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(3, 0xfffffff0, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
  D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(2, 16, F_NEXT, 1); D(2, 16, F_NEXT, 0); NONE; NONE; SC(0, 1)
  D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; SC(0, 1)
  D(3, 64, F_INDIRECT | F_NEXT, 1); D(2, 16, F_WRITE, 0); NONE; NONE; D(2, 16, 0, 0); NONE; NONE; NONE; SC(0, 1)
  D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(UART0, 16, F_WRITE, 0); NONE; NONE; NONE; SC(0, 1)
  D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(4, 16, F_NEXT, 1); D(RAM_END, 4096, F_NEXT | F_WRITE, 2); D(2, 1, F_WRITE, 9); NONE; SC(0, 1)
  /* heads out of range, the available index leaping */
  D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0xffff, 1)
  D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(QSIZE, 1)
  D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 0x8000)
  D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, QSIZE + 1)
  .dword -1

  .data
  .balign 8
storm_mode: .dword 0
needs_reset_count: .dword 0
blk_slot: .dword 0
slot_ids: .space 8 * VIRTIO_SLOTS
exception_counts: .space 8 * 16
interrupt_counts: .space 8 * 16
source_counts: .space 8 * 128
  .balign 16
blk_req: .space 16
blk_status: .byte 0
  .balign 4
pfn_buf: .word 0
  .balign 16
tx_buf:
  .byte 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0            /* virtio_net_hdr: no offloads */
  .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x88, 0xb5
  .ascii "hostile guest test frame, local experimental ethertype......"
  .balign 16
indirect_table: .space 64

  .bss
  .balign 4096
queues: .space 0x1000 * MAXQ * VIRTIO_SLOTS
dma_buf: .space 0x1000
  .balign 16
stack: .space 8192
stack_top:
trap_stack: .space 1024
trap_stack_top:
