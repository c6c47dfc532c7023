/* A guest that writes and flushes in a loop, for the kill -9 crash test
   (Tests/MachinesTests/Qcow2GuestTests.swift, killedWhileTheGuestWritesLosesNothingFlushed).

   Record n (n = 1, 2, ... MAXN) is 4 KiB whose every 64-bit word is n, written at sector
   n * STRIDE (so that records keep allocating new clusters), then the device is asked to
   FLUSH, and once the flush has completed one '.' goes out on the UART. The host counts the
   dots it has read when it kills the emulator: every record up to that count was flushed, so
   it must be in the image. After MAXN records the program passes (exit 0).

   The driver is codedma.S's (virtio-mmio version 2, first slot, one polled split queue of 8),
   negotiating VIRTIO_BLK_F_FLUSH (feature bit 9) besides VIRTIO_F_VERSION_1. */
#include "test.h"
#define VIRTIO 0x10008000
#define MAGIC 0x000
#define VERSION 0x004
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
#define QSIZE 8
#define STRIDE 40
#define MAXN 4000

  .option norelax
RVTEST_BEGIN
  li s0, VIRTIO
  lw a0, MAGIC(s0)
  CHECK(10, a0, 0x74726976)
  lw a0, VERSION(s0)
  CHECK(11, a0, 2)
  lw a0, DEVICE_ID(s0)
  CHECK(12, a0, 2)
  sw zero, STATUS(s0)
  li t0, 1
  sw t0, STATUS(s0)
  li t0, 3
  sw t0, STATUS(s0)
  /* features: VIRTIO_F_VERSION_1 (bit 32) and VIRTIO_BLK_F_FLUSH (bit 9) */
  li t0, 1
  sw t0, DEVICE_FEATURES_SEL(s0)
  lw a0, DEVICE_FEATURES(s0)
  andi a0, a0, 1
  CHECK(13, a0, 1)
  sw zero, DEVICE_FEATURES_SEL(s0)
  lw a0, DEVICE_FEATURES(s0)
  srli a0, a0, 9
  andi a0, a0, 1
  CHECK(14, a0, 1)
  li t0, 1
  sw t0, DRIVER_FEATURES_SEL(s0)
  li t0, 1
  sw t0, DRIVER_FEATURES(s0)
  sw zero, DRIVER_FEATURES_SEL(s0)
  li t0, 0x200
  sw t0, DRIVER_FEATURES(s0)
  li t0, 11                 /* | FEATURES_OK */
  sw t0, STATUS(s0)
  lw a0, STATUS(s0)
  andi a0, a0, 8
  CHECK(15, a0, 8)
  sw zero, QUEUE_SEL(s0)
  lw a0, QUEUE_NUM_MAX(s0)
  li gp, 16
  li t0, QSIZE
  bltu a0, t0, fail
  sw t0, QUEUE_NUM(s0)
  la t0, desc
  sw t0, QUEUE_DESC_LOW(s0)
  srli t0, t0, 32
  sw t0, QUEUE_DESC_HIGH(s0)
  la t0, avail
  sw t0, QUEUE_DRIVER_LOW(s0)
  srli t0, t0, 32
  sw t0, QUEUE_DRIVER_HIGH(s0)
  la t0, used
  sw t0, QUEUE_DEVICE_LOW(s0)
  srli t0, t0, 32
  sw t0, QUEUE_DEVICE_HIGH(s0)
  li t0, 1
  sw t0, QUEUE_READY(s0)
  li t0, 15                 /* | DRIVER_OK */
  sw t0, STATUS(s0)
  lw a0, STATUS(s0)
  CHECK(17, a0, 15)

  li s1, 1                  /* n */
next_record:
  /* the record: 512 words of n */
  la t0, record
  li t1, 512
1:
  sd s1, 0(t0)
  addi t0, t0, 8
  addi t1, t1, -1
  bnez t1, 1b
  /* VIRTIO_BLK_T_OUT (1) at sector n * STRIDE */
  li a0, 1
  li t0, STRIDE
  mul a1, s1, t0
  la a2, record
  li a3, 4096
  li gp, 20
  call blk_request
  /* VIRTIO_BLK_T_FLUSH (4) */
  li a0, 4
  li a1, 0
  li a2, 0
  li a3, 0
  li gp, 30
  call blk_request
  /* flushed: say so */
  li t0, UART0
  li t1, '.'
  sb t1, 0(t0)
  addi s1, s1, 1
  li t0, MAXN
  bleu s1, t0, next_record
  RVTEST_PASS

/* blk_request: request type a0 for sector a1 with a3 bytes at a2 (none when a3 is 0; the
   device reads them for OUT, writes them for IN) through queue 0; waits for the device.
   Fails with check gp + 1 (timeout) or gp + 2 (status not OK). Uses t0-t4. */
blk_request:
  la t0, request
  sw a0, 0(t0)
  sw zero, 4(t0)
  sd a1, 8(t0)
  la t1, desc
  /* desc 0: the request header, device-readable, next 1 */
  sd t0, 0(t1)
  li t2, 16
  sw t2, 8(t1)
  li t2, 1
  sh t2, 12(t1)
  sh t2, 14(t1)
  la t0, blk_status
  li t2, 0xff
  sb t2, 0(t0)
  beqz a3, 4f
  /* desc 1: the data (device-writable for IN), next 2; desc 2: the status byte */
  sd a2, 16(t1)
  sw a3, 24(t1)
  li t2, 1                  /* NEXT */
  bnez a0, 5f
  li t2, 3                  /* NEXT | WRITE for IN (type 0) */
5:
  sh t2, 28(t1)
  li t2, 2
  sh t2, 30(t1)
  sd t0, 32(t1)
  li t2, 1
  sw t2, 40(t1)
  li t2, 2
  sh t2, 44(t1)
  sh zero, 46(t1)
  j 6f
4:
  /* no data: desc 1 is the status byte */
  sd t0, 16(t1)
  li t2, 1
  sw t2, 24(t1)
  li t2, 2
  sh t2, 28(t1)
  sh zero, 30(t1)
6:
  /* avail.ring[idx % QSIZE] = 0, then avail.idx += 1 */
  la t0, avail
  lhu t2, 2(t0)
  andi t3, t2, QSIZE - 1
  slli t3, t3, 1
  add t3, t3, t0
  sh zero, 4(t3)
  fence w, w
  addi t2, t2, 1
  sh t2, 2(t0)
  fence w, w
  li t0, VIRTIO
  sw zero, QUEUE_NOTIFY(t0)
  /* wait for used.idx to reach avail.idx */
  la t0, used
  li t4, 100000000
1:
  lhu t3, 2(t0)
  beq t3, t2, 2f
  addi t4, t4, -1
  bnez t4, 1b
  addi gp, gp, 1
  j fail
2:
  fence r, r
  li t0, VIRTIO
  lw t3, INTERRUPT_STATUS(t0)
  sw t3, INTERRUPT_ACK(t0)
  la t0, blk_status
  lbu t3, 0(t0)
  beqz t3, 3f
  addi gp, gp, 2
  j fail
3:
  ret

RVTEST_FAIL_CODE
RVTEST_TRAP_HANDLER
RVTEST_DATA
.data
  .balign 16
desc: .space 16 * QSIZE
  .balign 2
avail: .space 4 + 2 * QSIZE + 2
  .balign 4
used: .space 4 + 8 * QSIZE + 2
  .balign 16
request: .space 16
blk_status: .byte 0
  .balign 4096
record: .space 4096
