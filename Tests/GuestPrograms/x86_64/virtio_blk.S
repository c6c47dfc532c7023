/* virtio_blk: drives the virtio-blk device on the first virtio-mmio slot (0xd0000000) by polling,
 * as the virtio 1.2 spec describes it (§4.2.3 MMIO device initialization, §2.7 split virtqueues,
 * §5.2.6 block requests): reads sector 0 and prints the text the host put there, then writes
 * "written by the guest" to sector 1. Exit code 0 when both requests complete with
 * VIRTIO_BLK_S_OK; 1 when the device is not a virtio-blk; 2 when features are refused; 3 on a
 * failed request.
 * With "irq" on the command line it waits for each request's used-buffer interrupt instead of
 * polling: IOAPIC pin 5 (the slot's GSI, as the DSDT says) -> vector 0x30 on the local APIC, an
 * IDT with that one gate, `sti; hlt` until the handler has counted it; it prints the count. */
#include "guest.h"

/* virtio-mmio registers (§4.2.2) */
#define MAGIC           0x000
#define VERSION         0x004
#define DEVICE_ID       0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
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
#define DESC            0x300000        /* 16-byte descriptors */
#define AVAIL           0x301000        /* flags, idx, ring[QSIZE] */
#define USED            0x302000        /* flags, idx, ring[QSIZE] of {id, len} */
#define HEADER          0x303000        /* struct virtio_blk_req header: type, reserved, sector */
#define DATA            0x304000
#define STATUS_BYTE     0x305000
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK   0x064

#define VECTOR          0x30
#define VIRTIO_GSI      5
#define IOAPIC          0xfec00000
#define LAPIC_EOI       0xb0
#define LAPIC_SVR       0xf0

    .text
    .globl main
main:
    push    %rbx
    mov     $VIRTIO_MMIO, %ebx
    cmpl    $0x74726976, MAGIC(%rbx)        /* "virt" */
    jne     not_blk
    cmpl    $2, VERSION(%rbx)
    jne     not_blk
    cmpl    $2, DEVICE_ID(%rbx)             /* block device */
    jne     not_blk

    movl    $0, STATUS(%rbx)                /* reset */
    movl    $S_ACKNOWLEDGE, STATUS(%rbx)
    movl    $(S_ACKNOWLEDGE | S_DRIVER), STATUS(%rbx)
    movl    $1, DRIVER_FEATURES_SEL(%rbx)   /* bits 32-63: VIRTIO_F_VERSION_1 (bit 32) only */
    movl    $1, DRIVER_FEATURES(%rbx)
    movl    $0, DRIVER_FEATURES_SEL(%rbx)
    movl    $0, DRIVER_FEATURES(%rbx)
    movl    $(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK), STATUS(%rbx)
    testl   $S_FEATURES_OK, STATUS(%rbx)
    jz      features_refused

    movl    $0, QUEUE_SEL(%rbx)
    movl    $QSIZE, QUEUE_NUM(%rbx)
    movl    $DESC, QUEUE_DESC_LOW(%rbx)
    movl    $0, QUEUE_DESC_HIGH(%rbx)
    movl    $AVAIL, QUEUE_AVAIL_LOW(%rbx)
    movl    $0, QUEUE_AVAIL_HIGH(%rbx)
    movl    $USED, QUEUE_USED_LOW(%rbx)
    movl    $0, QUEUE_USED_HIGH(%rbx)
    movl    $1, QUEUE_READY(%rbx)
    movl    $(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), STATUS(%rbx)

    lea     irq_word(%rip), %rsi
    call    cmdline_has
    mov     %eax, use_irq(%rip)
    jz      1f
    call    setup_interrupts
1:

    /* Request 1: VIRTIO_BLK_T_IN (0) of sector 0 into DATA. */
    xor     %edi, %edi                      /* type */
    xor     %esi, %esi                      /* sector */
    mov     $2, %edx                        /* data descriptor flags: WRITE (device writes) */
    mov     $1, %ecx                        /* expected used index */
    call    request
    lea     read_label(%rip), %rsi
    call    puts
    mov     $DATA, %esi
    movb    $0, 200(%rsi)                   /* print at most 200 characters */
    call    puts
    call    newline

    /* Request 2: VIRTIO_BLK_T_OUT (1) of DATA, now the guest's text, to sector 1. */
    lea     message(%rip), %rsi
    mov     $DATA, %edi
1:  movb    (%rsi), %al
    movb    %al, (%rdi)
    inc     %rsi
    inc     %rdi
    test    %al, %al
    jnz     1b
    mov     $1, %edi
    mov     $1, %esi
    xor     %edx, %edx                      /* data is read by the device */
    mov     $2, %ecx
    call    request
    lea     wrote_label(%rip), %rsi
    call    puts
    cmpl    $0, use_irq(%rip)
    je      2f
    lea     irq_label(%rip), %rsi
    call    puts
    mov     irq_count(%rip), %edi
    call    puthex
    call    newline
2:  xor     %eax, %eax
    pop     %rbx
    ret

/* setup_interrupts: the 8259s masked (their output would reach LINT0), the local APIC enabled,
 * an IDT whose gate VECTOR is virtio_interrupt, and IOAPIC pin VIRTIO_GSI routed to VECTOR on
 * APIC 0, edge-triggered, active high (82093AA datasheet 3.2.4: IOREGSEL at 0, IOWIN at 0x10;
 * redirection entry n at registers 0x10 + 2n). */
setup_interrupts:
    mov     $0xff, %al
    outb    %al, $0x21
    outb    %al, $0xa1
    mov     $LAPIC, %eax
    movl    $0x1ff, LAPIC_SVR(%rax)         /* APIC software enable, spurious vector 0xff */
    lea     virtio_interrupt(%rip), %rax    /* 64-bit interrupt gate (SDM Vol. 3 6.14.1) */
    lea     idt + VECTOR * 16(%rip), %rdi
    mov     %ax, (%rdi)
    movw    $0x10, 2(%rdi)
    movw    $0x8e00, 4(%rdi)
    shr     $16, %rax
    mov     %ax, 6(%rdi)
    shr     $16, %rax
    mov     %eax, 8(%rdi)
    movl    $0, 12(%rdi)
    lea     idt(%rip), %rax
    mov     %rax, idtr + 2(%rip)
    lidt    idtr(%rip)
    mov     $IOAPIC, %eax
    movl    $(0x10 + 2 * VIRTIO_GSI + 1), (%rax)
    movl    $0, 0x10(%rax)                  /* destination: APIC id 0 */
    movl    $(0x10 + 2 * VIRTIO_GSI), (%rax)
    movl    $VECTOR, 0x10(%rax)             /* fixed, physical, high, edge, unmasked */
    ret

virtio_interrupt:
    push    %rax
    push    %rdx
    mov     $VIRTIO_MMIO, %eax
    mov     INTERRUPT_STATUS(%rax), %edx
    mov     %edx, INTERRUPT_ACK(%rax)
    incl    irq_count(%rip)
    mov     $LAPIC, %eax
    movl    $0, LAPIC_EOI(%rax)
    pop     %rdx
    pop     %rax
    iretq

/* request: %edi = type, %esi = sector, %edx = data descriptor flags, %ecx = used index to wait
 * for. Builds the three-descriptor chain header -> data (512 bytes) -> status, publishes it and
 * notifies queue 0, then polls the used ring. Returns only on VIRTIO_BLK_S_OK. */
request:
    movl    %edi, HEADER
    movl    $0, HEADER + 4
    movq    %rsi, HEADER + 8
    movb    $0xff, STATUS_BYTE
    /* descriptor 0: header, 16 bytes, NEXT -> 1 */
    movq    $HEADER, DESC
    movl    $16, DESC + 8
    movw    $1, DESC + 12
    movw    $1, DESC + 14
    /* descriptor 1: data, 512 bytes, NEXT (| WRITE for a read) -> 2 */
    movq    $DATA, DESC + 16
    movl    $512, DESC + 24
    or      $1, %edx
    movw    %dx, DESC + 28
    movw    $2, DESC + 30
    /* descriptor 2: status byte, WRITE */
    movq    $STATUS_BYTE, DESC + 32
    movl    $1, DESC + 40
    movw    $2, DESC + 44
    movw    $0, DESC + 46
    /* avail ring: ring[idx % QSIZE] = 0, then idx + 1 (x86 stores are not reordered) */
    movzwl  AVAIL + 2, %eax
    mov     %eax, %edi
    and     $(QSIZE - 1), %edi
    movw    $0, AVAIL + 4(,%rdi,2)
    inc     %eax
    movw    %ax, AVAIL + 2
    movl    $0, QUEUE_NOTIFY(%rbx)
    /* Done when the used index reaches %ecx and, with interrupts, when as many interrupts
     * have been counted: a completion may land before the check, its interrupt after it. */
1:  cli
    movzwl  USED + 2, %eax
    cmp     %ecx, %eax
    jne     2f
    cmpl    $0, use_irq(%rip)
    je      3f
    cmp     irq_count(%rip), %ecx
    jbe     3f
2:  cmpl    $0, use_irq(%rip)
    je      1b
    sti                                     /* sti; hlt: no interrupt slips in between */
    hlt
    jmp     1b
3:
    cmpb    $0, STATUS_BYTE                 /* VIRTIO_BLK_S_OK */
    jne     request_failed
    ret

not_blk:
    lea     not_blk_text(%rip), %rsi
    call    puts
    mov     $1, %eax
    jmp     exit_with
features_refused:
    lea     refused_text(%rip), %rsi
    call    puts
    mov     $2, %eax
    jmp     exit_with
request_failed:
    lea     failed_text(%rip), %rsi
    call    puts
    mov     $3, %eax
    jmp     exit_with

    .data
use_irq:        .long 0
irq_count:      .long 0
    .balign 16
idtr:           .word (VECTOR + 1) * 16 - 1
                .quad 0
    .bss
    .balign 16
idt:            .zero (VECTOR + 1) * 16

    .section .rodata
irq_word:       .asciz "irq"
irq_label:      .asciz "interrupts: "
read_label:     .asciz "sector 0: "
wrote_label:    .asciz "sector 1 written\n"
message:        .asciz "written by the guest"
not_blk_text:   .asciz "no virtio-blk at 0xd0000000\n"
refused_text:   .asciz "FEATURES_OK refused\n"
failed_text:    .asciz "request failed\n"
