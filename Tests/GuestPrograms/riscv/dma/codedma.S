/* Device DMA over code that has run: a virtio-blk read into a page of code that the hart has
   already executed (translated, for a JIT), then FENCE.I and a call into it, must run the
   code from the disk.

   Why it matters for a JIT: the bytes change under the translation without any store by a
   hart, so no store path of the hart can notice; the device's writes through its writable
   descriptors must mark the page written (GuestMemory's code tracking) so that FENCE.I drops
   its translations. Run by Tests/MachinesTests/CodeDMATests.swift with a raw disk whose
   sectors 0-7 hold a new page A and sector 8 a new function B (the words are in that file):
     A, sectors 0-7 -> code_a (the whole page): li a0, 0; li t0, 10; 1: addi a0, a0, 7;
        addi t0, t0, -1; bnez t0, 1b; ret (returns 70, was 1)
     B, sector 8 -> code_b (offset 0x200 of its page): addi a0, zero, 0x333; ret (was 3);
        the code at offset 0 of that page, not overwritten, still returns 2.
   A minimal polled driver for the virtio-mmio version 2 (virtio 1.x) transport of the first
   device on the command line (slot 0x10008000), one split virtqueue of 8 entries. It lives in
   a subdirectory so that BareMetalTests (which run every program of the directory above
   without a disk) do not pick it up. */
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

  .option norelax
RVTEST_BEGIN
  /* both pages have run: translated */
  TEST(1, a0, 1, call code_a)
  TEST(2, a0, 1, call code_a)
  TEST(3, a0, 3, call code_b)
  TEST(4, a0, 2, call code_b0)
  TEST(5, a0, 3, call code_b)

  /* the device: virtio-mmio version 2, a block device */
  li s0, VIRTIO
  lw a0, MAGIC(s0)
  CHECK(10, a0, 0x74726976)
  lw a0, VERSION(s0)
  CHECK(11, a0, 2)
  lw a0, DEVICE_ID(s0)
  CHECK(12, a0, 2)
  /* reset, ACKNOWLEDGE, DRIVER */
  sw zero, STATUS(s0)
  li t0, 1
  sw t0, STATUS(s0)
  li t0, 3
  sw t0, STATUS(s0)
  /* features: VIRTIO_F_VERSION_1 (bit 32) only */
  li t0, 1
  sw t0, DEVICE_FEATURES_SEL(s0)
  lw a0, DEVICE_FEATURES(s0)
  andi a0, a0, 1
  CHECK(13, a0, 1)
  li t0, 1
  sw t0, DRIVER_FEATURES_SEL(s0)
  li t0, 1
  sw t0, DRIVER_FEATURES(s0)
  sw zero, DRIVER_FEATURES_SEL(s0)
  sw zero, DRIVER_FEATURES(s0)
  li t0, 11                 /* | FEATURES_OK */
  sw t0, STATUS(s0)
  lw a0, STATUS(s0)
  andi a0, a0, 8
  CHECK(14, a0, 8)
  /* queue 0 */
  sw zero, QUEUE_SEL(s0)
  lw a0, QUEUE_NUM_MAX(s0)
  li gp, 15
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
  CHECK(16, a0, 15)

  /* read sectors 0-7 over code_a's page */
  li a0, 0
  la a1, code_a
  li a2, 4096
  li gp, 20
  call blk_read
  fence.i
  TEST(21, a0, 70, call code_a)
  TEST(22, a0, 70, call code_a)
  /* the other page is untouched */
  TEST(23, a0, 3, call code_b)

  /* read sector 8 over code_b (offset 0x200 of its page) */
  li a0, 8
  la a1, code_b
  li a2, 512
  li gp, 30
  call blk_read
  fence.i
  TEST(31, a0, 0x333, call code_b)
  TEST(32, a0, 2, call code_b0)
  TEST(33, a0, 0x333, call code_b)
  TEST(34, a0, 70, call code_a)
  RVTEST_PASS

/* blk_read: reads a2 bytes from sector a0 to a1 through queue 0 and waits for the device;
   fails with check gp + 1 (timeout) or gp + 2 (status not OK). Uses t0-t4. */
blk_read:
  la t0, request
  sw zero, 0(t0)            /* VIRTIO_BLK_T_IN */
  sw zero, 4(t0)
  sd a0, 8(t0)
  la t1, desc
  /* desc 0: the request header, device-readable, next 1 */
  sd t0, 0(t1)
  li t2, 16
  sw t2, 8(t1)
  li t2, 1
  sh t2, 12(t1)
  sh t2, 14(t1)
  /* desc 1: the data, device-writable, next 2 */
  sd a1, 16(t1)
  sw a2, 24(t1)
  li t2, 3
  sh t2, 28(t1)
  li t2, 2
  sh t2, 30(t1)
  /* desc 2: the status byte, device-writable */
  la t0, blk_status
  li t2, 0xff
  sb t2, 0(t0)
  sd t0, 32(t1)
  li t2, 1
  sw t2, 40(t1)
  li t2, 2
  sh t2, 44(t1)
  sh zero, 46(t1)
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

  .option push
  .option norvc
  .balign 4096
code_a:
  addi a0, zero, 1
  ret
  .balign 4096
code_b0:
  addi a0, zero, 2
  ret
  .balign 512
code_b:
  addi a0, zero, 3
  ret
  .balign 4096
  .option pop

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
