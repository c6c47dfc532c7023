/* virtio_net: drives the virtio-net device on the first virtio-mmio slot (0xd0000000) by
 * polling, as virtio 1.2 describes it (§4.2.3 MMIO device initialization, §2.7 split
 * virtqueues, §5.1.6 device operation): posts one receive buffer, sends an ARP request for
 * 10.0.2.2 from 10.0.2.15 (QEMU's user-network addresses, with its default MAC
 * 52:54:00:12:34:56) and waits for the ARP reply from 10.0.2.2, which the user-mode network
 * stack behind the NIC sends. Frames that are not that reply are skipped (the buffer is posted
 * again). Exit code 0 on the reply; 1 when the device is not a virtio-net; 2 when features are
 * refused; 3 when no reply came. */
#include "guest.h"

/* virtio-mmio registers (§4.2.2) */
#define MAGIC           0x000
#define VERSION         0x004
#define DEVICE_ID       0x008
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL       0x030
#define QUEUE_NUM       0x038
#define QUEUE_READY     0x044
#define QUEUE_NOTIFY    0x050
#define STATUS          0x070
#define QUEUE_DESC_LOW  0x080
#define QUEUE_DESC_HIGH 0x084
#define QUEUE_AVAIL_LOW 0x090
#define QUEUE_AVAIL_HIGH 0x094
#define QUEUE_USED_LOW  0x0a0
#define QUEUE_USED_HIGH 0x0a4

#define S_ACKNOWLEDGE   1
#define S_DRIVER        2
#define S_DRIVER_OK     4
#define S_FEATURES_OK   8

#define QSIZE           8
#define RX_DESC         0x300000        /* receiveq1: descriptors, avail, used */
#define RX_AVAIL        0x301000
#define RX_USED         0x302000
#define TX_DESC         0x303000        /* transmitq1 */
#define TX_AVAIL        0x304000
#define TX_USED         0x305000
#define RX_BUFFER       0x306000        /* virtio_net_hdr (12 bytes with VERSION_1) + frame */
#define TX_BUFFER       0x307000
#define HEADER_SIZE     12
#define FRAME_SIZE      42              /* Ethernet (14) + ARP for IPv4 (28) */

    .text
    .globl main
main:
    push    %rbx
    mov     $VIRTIO_MMIO, %ebx
    cmpl    $0x74726976, MAGIC(%rbx)        /* "virt" */
    jne     not_net
    cmpl    $2, VERSION(%rbx)
    jne     not_net
    cmpl    $1, DEVICE_ID(%rbx)             /* network device */
    jne     not_net

    movl    $0, STATUS(%rbx)                /* reset */
    movl    $S_ACKNOWLEDGE, STATUS(%rbx)
    movl    $(S_ACKNOWLEDGE | S_DRIVER), STATUS(%rbx)
    movl    $1, DRIVER_FEATURES_SEL(%rbx)   /* bits 32-63: VIRTIO_F_VERSION_1 (bit 32) only */
    movl    $1, DRIVER_FEATURES(%rbx)
    movl    $0, DRIVER_FEATURES_SEL(%rbx)
    movl    $0, DRIVER_FEATURES(%rbx)       /* no MRG_RXBUF: one buffer takes a whole frame */
    movl    $(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK), STATUS(%rbx)
    testl   $S_FEATURES_OK, STATUS(%rbx)
    jz      features_refused

    xor     %edi, %edi
    mov     $RX_DESC, %esi
    call    setup_queue
    mov     $1, %edi
    mov     $TX_DESC, %esi
    call    setup_queue
    movl    $(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), STATUS(%rbx)

    /* The receive buffer: descriptor 0, 2048 bytes, device-writable. */
    movq    $RX_BUFFER, RX_DESC
    movl    $2048, RX_DESC + 8
    movw    $2, RX_DESC + 12                /* VIRTQ_DESC_F_WRITE */
    call    post_receive

    /* The ARP request: a zeroed virtio_net_hdr (no checksum to complete, GSO_NONE), then the
     * frame copied from arp_request. */
    mov     $TX_BUFFER, %edi
    xor     %eax, %eax
    mov     $HEADER_SIZE, %ecx
    rep stosb
    lea     arp_request(%rip), %rsi
    mov     $FRAME_SIZE, %ecx
    rep movsb
    movq    $TX_BUFFER, TX_DESC
    movl    $(HEADER_SIZE + FRAME_SIZE), TX_DESC + 8
    movw    $0, TX_DESC + 12
    movw    $0, TX_AVAIL + 4                /* ring[0] = descriptor 0 */
    movw    $1, TX_AVAIL + 2
    movl    $1, QUEUE_NOTIFY(%rbx)

    /* Wait for frames; each that is not the reply goes back to the device. */
    mov     $16, %r8d                       /* frames looked at */
    xor     %r9d, %r9d                      /* used index seen */
next_frame:
    call    timestamp                       /* give up after about 3 s by the TSC (3e9 ticks): */
    mov     %rax, %r10                      /* a loop count would take minutes under PVM */
1:  movzwl  RX_USED + 2, %eax
    cmp     %r9d, %eax
    jne     2f
    pause
    call    timestamp
    sub     %r10, %rax
    mov     $3000000000, %rdx
    cmp     %rdx, %rax
    jb      1b
    jmp     no_reply
2:  inc     %r9d
    mov     $(RX_BUFFER + HEADER_SIZE), %esi
    cmpw    $0x0608, 12(%rsi)               /* EtherType 0x0806, big-endian */
    jne     again
    cmpw    $0x0200, 20(%rsi)               /* ARP operation 2: reply */
    jne     again
    cmpl    $0x0202000a, 28(%rsi)           /* sender protocol address 10.0.2.2 */
    jne     again
    lea     reply_text(%rip), %rsi
    call    puts
    xor     %eax, %eax
    pop     %rbx
    ret
again:
    call    post_receive
    dec     %r8d
    jnz     next_frame
no_reply:
    lea     no_reply_text(%rip), %rsi
    call    puts
    mov     $3, %eax
    jmp     exit_with

/* timestamp: %rax = the TSC (clobbers %rdx). */
timestamp:
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    ret

/* setup_queue: %edi = queue index, %esi = its descriptor table (avail at +0x1000, used at
 * +0x2000). */
setup_queue:
    movl    %edi, QUEUE_SEL(%rbx)
    movl    $QSIZE, QUEUE_NUM(%rbx)
    movl    %esi, QUEUE_DESC_LOW(%rbx)
    movl    $0, QUEUE_DESC_HIGH(%rbx)
    lea     0x1000(%rsi), %eax
    movl    %eax, QUEUE_AVAIL_LOW(%rbx)
    movl    $0, QUEUE_AVAIL_HIGH(%rbx)
    lea     0x2000(%rsi), %eax
    movl    %eax, QUEUE_USED_LOW(%rbx)
    movl    $0, QUEUE_USED_HIGH(%rbx)
    movl    $1, QUEUE_READY(%rbx)
    ret

/* post_receive: descriptor 0 into the next receiveq avail slot, and a notification. */
post_receive:
    movzwl  RX_AVAIL + 2, %eax
    mov     %eax, %edx
    and     $(QSIZE - 1), %edx
    movw    $0, RX_AVAIL + 4(,%rdx,2)
    inc     %eax
    movw    %ax, RX_AVAIL + 2               /* x86 stores are not reordered */
    movl    $0, QUEUE_NOTIFY(%rbx)
    ret

not_net:
    lea     not_net_text(%rip), %rsi
    call    puts
    mov     $1, %eax
    jmp     exit_with
features_refused:
    lea     refused_text(%rip), %rsi
    call    puts
    mov     $2, %eax
    jmp     exit_with

    .data
arp_request:
    .byte   0xff, 0xff, 0xff, 0xff, 0xff, 0xff      /* to: broadcast */
    .byte   0x52, 0x54, 0x00, 0x12, 0x34, 0x56      /* from: QEMU's default MAC */
    .byte   0x08, 0x06                              /* ARP */
    .byte   0x00, 0x01, 0x08, 0x00, 6, 4            /* Ethernet, IPv4, sizes */
    .byte   0x00, 0x01                              /* request */
    .byte   0x52, 0x54, 0x00, 0x12, 0x34, 0x56      /* sender MAC */
    .byte   10, 0, 2, 15                            /* sender IP */
    .byte   0, 0, 0, 0, 0, 0                        /* target MAC: unknown */
    .byte   10, 0, 2, 2                             /* target IP: the gateway */
reply_text:     .asciz "arp reply from 10.0.2.2\n"
no_reply_text:  .asciz "no arp reply\n"
not_net_text:   .asciz "not a virtio-net device\n"
refused_text:   .asciz "features refused\n"
