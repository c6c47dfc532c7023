/* hostile: the hostile guest (issue 15, host safety) for the KVM microvm, the x86-64 twin of
 * riscv/hostile/hostile.S, run by Tests/KVMTests/HostileMicroVMTests.swift with every virtio
 * device type attached and 256 MiB of RAM.
 *
 * The xorshift64 seed is the first qword of the disk (which the test writes; the second is the
 * magic "HOSTILE!", qwords 2..511 of sectors 0-7 hold i * GOLDEN); it is printed first.
 *
 * A  Port I/O fuzz: PIO_ITERATIONS in/out of 1, 2 and 4 bytes, and rep ins/outs of up to 63
 *    elements, at random ports (the UART, the i8042, KVM's in-kernel PIC and PIT, and the
 *    unassigned rest), except the ports that end the run: the exit port 0x501-0x502, the
 *    i8042 command port 0x64 (0xfe resets) and the ACPI PM block 0x600-0x60b.
 *    MMIO fuzz: MMIO_ITERATIONS loads and stores of 1, 2, 4 and 8 bytes at random offsets of
 *    the eight virtio-mmio slots (registers and configuration space), the boot marker, and
 *    the unassigned space between RAM and 4 GiB; the IOAPIC and the local APIC are read only
 *    (a random redirection entry or ICR write could send this CPU an NMI or INIT, which
 *    with no IDT is a triple fault: the guest's own end, not the host's). The queue address
 *    registers get bit 30 set, so a queue the fuzz sets up lies above RAM.
 * B  Virtqueue abuse: every queue of every device is handed each chain of `scenarios`
 *    (buffers in MMIO, above RAM, wrapping past 2^64, of 2^32-1 bytes, over the rings; loops;
 *    next out of range; indirect tables in MMIO, above RAM, nested, of bad lengths; heads out
 *    of range; available index jumps; virtio 1.2 §2.7), then random descriptors; after each
 *    the device is reset (Status = 0, §2.4). Notifications go through KVM ioeventfds to
 *    swemu's I/O thread, so device work races the vCPU's resets here.
 * C  Resets mid-request, ROUNDS per device; then each device takes a valid request (exit
 *    code 20 + device ID if not) and virtio-blk reads sectors 0-7 back intact (exit code 11).
 * D  Interrupt line storms: STORM virtio-rng requests, each completion a rising edge on the
 *    slot's irqfd (interrupts stay disabled: the host side is what is under test).
 * Then a summary, "HOSTILE-DONE" and exit code 0 (swemu's status 1). */
#include "guest.h"

#define RAM_END         0x10000000      /* -m 256M */
#define SLOTS           8
#define MAGIC           0x000
#define DEVICE_ID       0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL       0x030
#define QUEUE_NUM_MAX   0x034
#define QUEUE_NUM       0x038
#define QUEUE_READY     0x044
#define QUEUE_NOTIFY    0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK   0x064
#define STATUS          0x070
#define QUEUE_DESC_LOW  0x080
#define QUEUE_DESC_HIGH 0x084
#define QUEUE_AVAIL_LOW 0x090
#define QUEUE_AVAIL_HIGH 0x094
#define QUEUE_USED_LOW  0x0a0
#define QUEUE_USED_HIGH 0x0a4
#define NEEDS_RESET     64

#define ID_NET 1
#define ID_BLK 2
#define ID_CONSOLE 3
#define ID_RNG 4
#define ID_BALLOON 5
#define ID_INPUT 18

#define QSIZE           16
#define MAXQ            4
#define AVAIL           0x400
#define USED            0x600
#define F_NEXT          1
#define F_WRITE         2
#define F_INDIRECT      4

#define QUEUES          0x400000        /* a page per (slot, queue) */
#define DMA_BUF         0x500000
#define INDIRECT        0x501000
#define BLK_REQ         0x502000
#define BLK_STATUS      0x502100
#define PIO_BUF         0x503000
#define TX_BUF          0x504000

#define GOLDEN          0x9e3779b97f4a7c15
#define DISK_MAGIC      0x21454c4954534f48
#define PIO_ITERATIONS  20000
#define MMIO_ITERATIONS 20000
#define ROUNDS          20
#define STORM           500
#define RANDOM_CHAINS   8
#define SCENARIO_SIZE   136
#define REGIONS         13

    .text
    .globl main
main:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    lea     s_hello(%rip), %rsi
    call    puts

    /* The devices: DeviceID per slot (0 where the magic is wrong: an empty slot reads all ones). */
    xor     %ecx, %ecx
1:  mov     %ecx, %eax
    shl     $12, %eax
    add     $VIRTIO_MMIO, %eax
    xor     %edx, %edx
    cmpl    $0x74726976, MAGIC(%rax)
    jne     2f
    mov     DEVICE_ID(%rax), %edx
2:  lea     slot_ids(%rip), %rax
    mov     %rdx, (%rax,%rcx,8)
    inc     %ecx
    cmp     $SLOTS, %ecx
    jb      1b

    mov     $ID_BLK, %edi
    call    find_slot
    mov     $10, %edi
    test    %eax, %eax
    js      fail_code
    mov     %eax, blk_slot(%rip)
    call    blk_read
    mov     $10, %edi
    test    %eax, %eax
    jz      fail_code
    mov     $DISK_MAGIC, %rax
    cmp     %rax, DMA_BUF + 8
    jne     fail_code
    mov     DMA_BUF, %r15
    test    %r15, %r15
    jnz     1f
    inc     %r15
1:  lea     s_seed(%rip), %rsi
    call    puts
    mov     %r15, %rdi
    call    puthex
    call    newline

    lea     s_phase_a(%rip), %rsi
    call    puts
    call    phase_a
    lea     s_phase_b(%rip), %rsi
    call    puts
    call    phase_b
    lea     s_phase_c(%rip), %rsi
    call    puts
    call    phase_c
    lea     s_phase_d(%rip), %rsi
    call    puts
    call    phase_d

    lea     s_needs_reset(%rip), %rsi
    call    puts
    mov     needs_reset(%rip), %rdi
    call    puthex
    call    newline
    lea     s_done(%rip), %rsi
    call    puts
    xor     %eax, %eax
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

/* fail_code: %edi = exit code; prints it after re-initialising the UART. */
fail_code:
    push    %rdi
    call    uart_init
    lea     s_fail(%rip), %rsi
    call    puts
    mov     (%rsp), %rdi
    call    puthex
    call    newline
    pop     %rax
    jmp     exit_with

/* rand: %rax = the next xorshift64 value of %r15. */
rand:
    mov     %r15, %rax
    shl     $13, %rax
    xor     %rax, %r15
    mov     %r15, %rax
    shr     $7, %rax
    xor     %rax, %r15
    mov     %r15, %rax
    shl     $17, %rax
    xor     %rax, %r15
    mov     %r15, %rax
    ret

/* uart_init: COM1 as a console again whatever the fuzz left: 8N1, DLAB off, no loopback, no
 * interrupts, FIFOs on. */
uart_init:
    mov     $COM1 + 3, %dx
    mov     $3, %al
    outb    %al, %dx
    mov     $COM1 + 4, %dx
    xor     %eax, %eax
    outb    %al, %dx
    mov     $COM1 + 1, %dx
    outb    %al, %dx
    mov     $COM1 + 2, %dx
    mov     $7, %al
    outb    %al, %dx
    ret

/* now: %rax = the TSC. */
now:
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    ret

/* find_slot: %edi = device ID; %eax = its slot or -1. */
find_slot:
    xor     %eax, %eax
    lea     slot_ids(%rip), %rcx
1:  cmp     %rdi, (%rcx,%rax,8)
    je      2f
    inc     %eax
    cmp     $SLOTS, %eax
    jb      1b
    mov     $-1, %eax
2:  ret

/* Slot %edi's window in %rax; queue %esi of slot %edi's page in %rax. */
slot_base:
    mov     %edi, %eax
    shl     $12, %eax
    add     $VIRTIO_MMIO, %eax
    ret
queue_page:
    lea     (%rsi,%rdi,4), %eax
    shl     $12, %eax
    add     $QUEUES, %eax
    ret

/* vinit: %edi = slot. Resets the device and sets it up (§3.1.1): VERSION_1 and INDIRECT_DESC
 * when offered, every queue up to MAXQ with QSIZE entries in its zeroed page, DRIVER_OK.
 * %eax = the number of queues (0 if the features were refused). Keeps %rdi. */
vinit:
    push    %rbx
    push    %r12
    mov     %edi, %r12d
    call    slot_base
    mov     %rax, %rbx
    movl    $0, STATUS(%rbx)
    movl    $1, STATUS(%rbx)
    movl    $3, STATUS(%rbx)
    movl    $0, DEVICE_FEATURES_SEL(%rbx)
    mov     DEVICE_FEATURES(%rbx), %eax
    and     $(1 << 28), %eax
    movl    $0, DRIVER_FEATURES_SEL(%rbx)
    mov     %eax, DRIVER_FEATURES(%rbx)
    movl    $1, DRIVER_FEATURES_SEL(%rbx)
    movl    $1, DRIVER_FEATURES(%rbx)
    movl    $11, STATUS(%rbx)
    xor     %eax, %eax
    testl   $8, STATUS(%rbx)
    jz      9f
    xor     %ecx, %ecx
1:  mov     %ecx, QUEUE_SEL(%rbx)
    cmpl    $QSIZE, QUEUE_NUM_MAX(%rbx)
    jb      3f
    mov     %r12d, %edi
    mov     %ecx, %esi
    call    queue_page
    mov     %rax, %rdi
    push    %rcx
    push    %rdi
    mov     $512, %ecx
    xor     %eax, %eax
    rep stosq
    pop     %rdi
    pop     %rcx
    movl    $QSIZE, QUEUE_NUM(%rbx)
    mov     %edi, QUEUE_DESC_LOW(%rbx)
    movl    $0, QUEUE_DESC_HIGH(%rbx)
    lea     AVAIL(%rdi), %eax
    mov     %eax, QUEUE_AVAIL_LOW(%rbx)
    movl    $0, QUEUE_AVAIL_HIGH(%rbx)
    lea     USED(%rdi), %eax
    mov     %eax, QUEUE_USED_LOW(%rbx)
    movl    $0, QUEUE_USED_HIGH(%rbx)
    movl    $1, QUEUE_READY(%rbx)
    inc     %ecx
    cmp     $MAXQ, %ecx
    jb      1b
3:  movl    $15, STATUS(%rbx)
    mov     %ecx, %eax
9:  mov     %r12d, %edi
    pop     %r12
    pop     %rbx
    ret

/* post: %rdi = queue page, %esi = head: makes it available (§2.7.13). */
post:
    movzwl  AVAIL + 2(%rdi), %eax
    mov     %eax, %ecx
    and     $(QSIZE - 1), %ecx
    mov     %si, AVAIL + 4(%rdi,%rcx,2)
    inc     %eax
    mov     %ax, AVAIL + 2(%rdi)
    ret

/* wait_used: %rdi = queue page, %esi = used idx to reach; %eax = 1 if reached within about
 * 2^34 TSC ticks (several seconds: the device works on swemu's I/O thread), else 0. */
wait_used:
    push    %rbx
    call    now
    mov     %rax, %rbx
1:  movzwl  USED + 2(%rdi), %eax
    cmp     %esi, %eax
    je      2f
    pause
    call    now
    sub     %rbx, %rax
    shr     $34, %rax
    jz      1b
    xor     %eax, %eax
    pop     %rbx
    ret
2:  mov     $1, %eax
    pop     %rbx
    ret

/* desc: %rdi = table, %esi = index, %rdx = address, %ecx = length, %r8d = flags, %r9d = next. */
desc:
    shl     $4, %esi
    add     %rdi, %rsi
    mov     %rdx, (%rsi)
    mov     %ecx, 8(%rsi)
    mov     %r8w, 12(%rsi)
    mov     %r9w, 14(%rsi)
    ret

/* valid_request: %edi = slot, %esi = device ID. Builds at descriptors 0-2 a request the device
 * must take (blk: read of sectors 0-7 to DMA_BUF; net, console: a frame/text on queue 1;
 * input: an event on the status queue 1; rng: 64 bytes; balloon: inflate of a page above
 * RAM, ignored by §5.5.6) and returns %eax = the queue. */
valid_request:
    push    %rbx
    push    %r12
    push    %r13
    mov     %esi, %r12d
    xor     %r13d, %r13d
    cmp     $ID_NET, %esi
    je      1f
    cmp     $ID_CONSOLE, %esi
    je      1f
    cmp     $ID_INPUT, %esi
    jne     2f
1:  mov     $1, %r13d
2:  mov     %r13d, %esi
    call    queue_page
    mov     %rax, %rbx
    mov     %rbx, %rdi
    xor     %esi, %esi
    xor     %r9d, %r9d
    cmp     $ID_BLK, %r12d
    je      3f
    cmp     $ID_RNG, %r12d
    je      4f
    cmp     $ID_BALLOON, %r12d
    je      5f
    mov     $TX_BUF, %edx
    mov     $72, %ecx
    cmp     $ID_INPUT, %r12d
    jne     6f
    mov     $8, %ecx
6:  xor     %r8d, %r8d
    call    desc
    jmp     9f
3:  movq    $0, BLK_REQ
    movq    $0, BLK_REQ + 8
    movb    $0xff, BLK_STATUS
    mov     $BLK_REQ, %edx
    mov     $16, %ecx
    mov     $F_NEXT, %r8d
    mov     $1, %r9d
    call    desc
    mov     %rbx, %rdi
    mov     $1, %esi
    mov     $DMA_BUF, %edx
    mov     $4096, %ecx
    mov     $(F_NEXT | F_WRITE), %r8d
    mov     $2, %r9d
    call    desc
    mov     %rbx, %rdi
    mov     $2, %esi
    mov     $BLK_STATUS, %edx
    mov     $1, %ecx
    mov     $F_WRITE, %r8d
    xor     %r9d, %r9d
    call    desc
    jmp     9f
4:  mov     $DMA_BUF, %edx
    mov     $64, %ecx
    mov     $F_WRITE, %r8d
    call    desc
    jmp     9f
5:  movl    $(RAM_END >> 12), PIO_BUF
    mov     $PIO_BUF, %edx
    mov     $4, %ecx
    xor     %r8d, %r8d
    call    desc
9:  mov     %r13d, %eax
    pop     %r13
    pop     %r12
    pop     %rbx
    ret

/* works: %edi = slot: set up, one valid request, %eax = 1 if it came back used. */
works:
    push    %rbx
    push    %r12
    push    %r13
    mov     %edi, %r12d
    call    vinit
    test    %eax, %eax
    jz      9f
    lea     slot_ids(%rip), %rax
    mov     (%rax,%r12,8), %rsi
    mov     %r12d, %edi
    call    valid_request
    mov     %eax, %r13d
    mov     %r12d, %edi
    mov     %r13d, %esi
    call    queue_page
    mov     %rax, %rbx
    mov     %rbx, %rdi
    xor     %esi, %esi
    call    post
    mov     %r12d, %edi
    call    slot_base
    mov     %r13d, QUEUE_NOTIFY(%rax)
    mov     %rbx, %rdi
    mov     $1, %esi
    call    wait_used
9:  pop     %r13
    pop     %r12
    pop     %rbx
    ret

/* blk_read: sectors 0-7 into DMA_BUF; %eax = 1 when done with status OK. */
blk_read:
    mov     blk_slot(%rip), %edi
    call    works
    test    %eax, %eax
    jz      1f
    xor     %eax, %eax
    cmpb    $0, BLK_STATUS
    sete    %al
1:  ret

/* after_abuse: %rdi = slot window: counts DEVICE_NEEDS_RESET, then resets the device. */
after_abuse:
    testl   $NEEDS_RESET, STATUS(%rdi)
    jz      1f
    incq    needs_reset(%rip)
1:  movl    $0, STATUS(%rdi)
    ret

/* ------------------------------------------------------------------ phase A */

phase_a:
    push    %rbx
    push    %r12
    mov     $PIO_ITERATIONS, %r12d
pio_next:
    call    rand
    mov     %eax, %edx
    and     $0xffff, %edx                   /* the port */
    cmp     $0x501, %edx
    je      pio_done
    cmp     $0x502, %edx
    je      pio_done
    cmp     $0x64, %edx
    je      pio_done
    lea     -0x600(%rdx), %ecx
    cmp     $12, %ecx
    jb      pio_done
    /* Half the time, the UART's ports. */
    bt      $40, %rax
    jnc     1f
    and     $7, %edx
    add     $COM1, %edx
1:  mov     %rax, %rbx
    shr     $32, %rbx                       /* the value */
    mov     %rax, %rcx
    shr     $16, %rcx
    and     $7, %ecx                        /* the operation */
    mov     %ebx, %eax
    cmp     $0, %ecx
    je      2f
    cmp     $1, %ecx
    je      3f
    cmp     $2, %ecx
    je      4f
    cmp     $3, %ecx
    je      5f
    cmp     $4, %ecx
    je      6f
    cmp     $5, %ecx
    je      7f
    /* rep outsb / rep insw of up to 63 elements, through PIO_BUF */
    mov     %rbx, %rcx
    and     $63, %ecx
    cld
    mov     $PIO_BUF, %esi
    mov     $PIO_BUF, %edi
    bt      $6, %rbx
    jc      8f
    rep outsb
    jmp     pio_done
8:  rep insw
    jmp     pio_done
2:  outb    %al, %dx
    jmp     pio_done
3:  outw    %ax, %dx
    jmp     pio_done
4:  outl    %eax, %dx
    jmp     pio_done
5:  inb     %dx, %al
    jmp     pio_done
6:  inw     %dx, %ax
    jmp     pio_done
7:  inl     %dx, %eax
pio_done:
    dec     %r12d
    jnz     pio_next
    call    uart_init

    mov     $MMIO_ITERATIONS, %r12d
mmio_next:
    call    rand
    xor     %edx, %edx
    mov     $REGIONS, %ecx
    div     %rcx                            /* %rdx = region */
    shl     $4, %rdx
    lea     regions(%rip), %rcx
    mov     (%rcx,%rdx), %rbx               /* base */
    mov     8(%rcx,%rdx), %rcx              /* span */
    call    rand
    xor     %edx, %edx
    div     %rcx
    add     %rdx, %rbx                      /* the address */
    call    rand
    mov     %rax, %rcx                      /* the value */
    /* queue address registers of a slot: above RAM */
    mov     %rbx, %rdx
    mov     $VIRTIO_MMIO, %esi
    sub     %rsi, %rdx
    cmp     $(SLOTS << 12), %rdx
    jae     1f
    and     $0xfff, %edx
    sub     $QUEUE_DESC_LOW, %edx
    cmp     $(QUEUE_USED_HIGH + 4 - QUEUE_DESC_LOW), %edx
    jae     1f
    or      $0x40000000, %rcx
1:  call    rand
    and     $15, %eax
    /* from the IOAPIC up (the APICs, KVM's TSS and identity map pages): loads only */
    mov     $0xfec00000, %edx
    cmp     %rdx, %rbx
    jb      3f
    or      $8, %eax
3:  cmp     $1, %eax
    je      5f
    cmp     $2, %eax
    je      6f
    cmp     $3, %eax
    je      7f
    cmp     $4, %eax
    je      8f
    cmp     $8, %eax
    jb      4f
    and     $3, %eax
    jz      10f
    cmp     $1, %eax
    je      11f
    cmp     $2, %eax
    je      12f
    mov     (%rbx), %rax
    jmp     mmio_done
10: movb    (%rbx), %al
    jmp     mmio_done
11: movw    (%rbx), %ax
    jmp     mmio_done
12: movl    (%rbx), %eax
    jmp     mmio_done
4:  movb    %cl, (%rbx)
    jmp     mmio_done
5:  movw    %cx, (%rbx)
    jmp     mmio_done
6:  movl    %ecx, (%rbx)
    jmp     mmio_done
7:  mov     %rcx, (%rbx)
    jmp     mmio_done
8:  xchg    %ecx, (%rbx)                    /* a locked read-modify-write */
mmio_done:
    dec     %r12d
    jnz     mmio_next
    pop     %r12
    pop     %rbx
    ret

/* ------------------------------------------------------------------ phase B */

/* fixup: %rax = a scenario address; 1 = the queue page (%r14), 2 = DMA_BUF, 3 = INDIRECT,
 * 4 = a valid virtio-blk read header. */
fixup:
    cmp     $1, %rax
    jne     1f
    mov     %r14, %rax
    ret
1:  cmp     $2, %rax
    jne     2f
    mov     $DMA_BUF, %eax
    ret
2:  cmp     $3, %rax
    jne     3f
    mov     $INDIRECT, %eax
    ret
3:  cmp     $4, %rax
    jne     4f
    movq    $0, BLK_REQ
    movq    $0, BLK_REQ + 8
    mov     $BLK_REQ, %eax
4:  ret

/* copy_descs: %rsi = 4 scenario descriptors, %rdi = their place. */
copy_descs:
    mov     $4, %ecx
1:  mov     (%rsi), %rax
    call    fixup
    mov     %rax, (%rdi)
    mov     8(%rsi), %rax
    mov     %rax, 8(%rdi)
    add     $16, %rsi
    add     $16, %rdi
    loop    1b
    ret

phase_b:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    xor     %r12d, %r12d                    /* slot */
b_slot:
    lea     slot_ids(%rip), %rax
    cmpq    $0, (%rax,%r12,8)
    je      b_next_slot
    mov     %r12d, %edi
    call    vinit
    mov     %eax, %ebp                      /* queues */
    xor     %r13d, %r13d                    /* queue */
b_queue:
    cmp     %ebp, %r13d
    jae     b_next_slot
    lea     scenarios(%rip), %rbx
b_scenario:
    cmpq    $-1, (%rbx)
    je      b_random
    mov     %r12d, %edi
    call    vinit
    mov     %r12d, %edi
    mov     %r13d, %esi
    call    queue_page
    mov     %rax, %r14
    mov     %rbx, %rsi
    mov     %r14, %rdi
    call    copy_descs
    lea     64(%rbx), %rsi
    mov     $INDIRECT, %edi
    call    copy_descs
    movzwl  128(%rbx), %eax
    mov     %ax, AVAIL + 4(%r14)
    movzwl  130(%rbx), %eax
    mov     %ax, AVAIL + 2(%r14)
    mov     %r12d, %edi
    call    slot_base
    mov     %r13d, QUEUE_NOTIFY(%rax)
    /* a moment for swemu's I/O thread, sometimes none */
    push    %rax
    call    rand
    and     $255, %eax
    mov     %eax, %ecx
1:  pause
    dec     %ecx
    jns     1b
    pop     %rdi
    call    after_abuse
    add     $SCENARIO_SIZE, %rbx
    jmp     b_scenario
b_random:
    mov     $RANDOM_CHAINS, %ebx
1:  mov     %r12d, %edi
    call    vinit
    mov     %r12d, %edi
    mov     %r13d, %esi
    call    queue_page
    mov     %rax, %r14
    mov     %r14, %rdi
    mov     $(QSIZE * 2), %ecx
2:  push    %rcx
    call    rand
    pop     %rcx
    mov     %rax, (%rdi)
    add     $8, %rdi
    loop    2b
    /* half the time the addresses in RAM (DMA_BUF), lengths under 4 KiB */
    call    rand
    bt      $0, %rax
    jnc     4f
    mov     %r14, %rdi
    mov     $QSIZE, %ecx
3:  movq    $DMA_BUF, (%rdi)
    andl    $0xfff, 8(%rdi)
    add     $16, %rdi
    loop    3b
4:  call    rand
    mov     %eax, %esi
    and     $(QSIZE - 1), %esi
    mov     %r14, %rdi
    call    post
    mov     %r12d, %edi
    call    slot_base
    mov     %r13d, QUEUE_NOTIFY(%rax)
    mov     %rax, %rdi
    call    after_abuse
    dec     %ebx
    jnz     1b
    inc     %r13d
    jmp     b_queue
b_next_slot:
    inc     %r12d
    cmp     $SLOTS, %r12d
    jb      b_slot
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

/* ------------------------------------------------------------------ phase C */

phase_c:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    xor     %r12d, %r12d
c_slot:
    lea     slot_ids(%rip), %rax
    mov     (%rax,%r12,8), %rbp             /* device ID */
    test    %rbp, %rbp
    jz      c_next_slot
    mov     $ROUNDS, %ebx
c_round:
    mov     %r12d, %edi
    call    vinit
    test    %eax, %eax
    jz      c_next_round
    mov     %r12d, %edi
    mov     %ebp, %esi
    call    valid_request
    mov     %eax, %r13d
    mov     %r12d, %edi
    mov     %r13d, %esi
    call    queue_page
    mov     %rax, %r14
    mov     $5, %ecx
1:  push    %rcx
    mov     %r14, %rdi
    xor     %esi, %esi
    call    post
    pop     %rcx
    loop    1b
    mov     %r12d, %edi
    call    slot_base
    mov     %r13d, QUEUE_NOTIFY(%rax)
    test    $1, %ebx
    jz      2f
    /* odd rounds: QueueReady = 0 first, or a random delay */
    mov     %r13d, QUEUE_SEL(%rax)
    movl    $0, QUEUE_READY(%rax)
    push    %rax
    call    rand
    and     $1023, %eax
    mov     %eax, %ecx
3:  pause
    dec     %ecx
    jns     3b
    pop     %rax
2:  movl    $0, STATUS(%rax)
c_next_round:
    dec     %ebx
    jnz     c_round
    mov     %r12d, %edi
    call    works
    lea     20(%rbp), %edi
    test    %eax, %eax
    jz      fail_code
c_next_slot:
    inc     %r12d
    cmp     $SLOTS, %r12d
    jb      c_slot
    /* virtio-blk reads sectors 0-7 back intact */
    call    blk_read
    mov     $11, %edi
    test    %eax, %eax
    jz      fail_code
    mov     $DISK_MAGIC, %rax
    cmp     %rax, DMA_BUF + 8
    jne     fail_code
    mov     $2, %ecx
    mov     $GOLDEN, %rsi
1:  mov     %rcx, %rax
    imul    %rsi, %rax
    cmp     %rax, DMA_BUF(,%rcx,8)
    jne     fail_code
    inc     %ecx
    cmp     $512, %ecx
    jb      1b
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

/* ------------------------------------------------------------------ phase D */

phase_d:
    push    %rbx
    push    %r12
    push    %r13
    mov     $ID_RNG, %edi
    call    find_slot
    mov     $12, %edi
    test    %eax, %eax
    js      fail_code
    mov     %eax, %r12d
    mov     %r12d, %edi
    call    vinit
    xor     %esi, %esi
    call    queue_page
    mov     %rax, %r13
    mov     %r13, %rdi
    xor     %esi, %esi
    mov     $DMA_BUF, %edx
    mov     $16, %ecx
    mov     $F_WRITE, %r8d
    xor     %r9d, %r9d
    call    desc
    mov     %r12d, %edi
    call    slot_base
    mov     %rax, %r12
    mov     $1, %ebx
1:  mov     %r13, %rdi
    xor     %esi, %esi
    call    post
    movl    $0, QUEUE_NOTIFY(%r12)
    mov     %r13, %rdi
    mov     %ebx, %esi
    call    wait_used
    mov     $13, %edi
    test    %eax, %eax
    jz      fail_code
    mov     INTERRUPT_STATUS(%r12), %eax    /* acknowledged: the next completion is an edge */
    mov     %eax, INTERRUPT_ACK(%r12)
    inc     %ebx
    cmp     $STORM, %ebx
    jbe     1b
    pop     %r13
    pop     %r12
    pop     %rbx
    ret

    .section .rodata
s_hello:        .asciz "hostile guest\n"
s_seed:         .asciz "HOSTILE seed="
s_phase_a:      .asciz "phase A: port I/O and MMIO fuzz\n"
s_phase_b:      .asciz "phase B: virtqueue abuse\n"
s_phase_c:      .asciz "phase C: resets mid-request\n"
s_phase_d:      .asciz "phase D: interrupt line storm\n"
s_needs_reset:  .asciz "DEVICE_NEEDS_RESET seen: "
s_done:         .asciz "HOSTILE-DONE\n"
s_fail:         .asciz "HOSTILE-FAIL "

    .balign 8
regions:        /* base, span */
    .quad VIRTIO_MMIO + 0x0000, 0x200
    .quad VIRTIO_MMIO + 0x1000, 0x200
    .quad VIRTIO_MMIO + 0x2000, 0x200
    .quad VIRTIO_MMIO + 0x3000, 0x200
    .quad VIRTIO_MMIO + 0x4000, 0x200
    .quad VIRTIO_MMIO + 0x5000, 0x200
    .quad VIRTIO_MMIO + 0x6000, 0x200
    .quad VIRTIO_MMIO + 0x7000, 0x200
    .quad VIRTIO_MMIO, 0x8000
    .quad BOOT_MARKER, 0x1000
    .quad RAM_END, 0xc0000000 - RAM_END         /* above RAM: nothing */
    .quad 0xd0008000, 0xfec00000 - 0xd0008000   /* nothing */
    .quad 0xfec00000, 0x1400000                 /* the IOAPIC, the local APIC, the top: read only */

#define D(addr, len, flags, next) .quad addr; .long len; .word flags, next
#define NONE D(0, 0, 0, 0)
#define SC(head, idx) .word head, idx; .long 0
    .balign 8
scenarios:
    D(VIRTIO_MMIO, 16, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(VIRTIO_MMIO, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(LAPIC, 16, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(RAM_END, 512, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(RAM_END - 256, 512, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(0xfffffffffffff000, 0x2000, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(0, 0xffffffff, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(4, 16, F_NEXT, 1); D(1, 4096, F_NEXT | F_WRITE, 2); D(2, 1, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(1, 4096, F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(2, 16, F_NEXT, 1); D(2, 16, F_NEXT, 0); NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(2, 16, F_NEXT | F_WRITE, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(2, 16, F_NEXT, 0x1234); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(2, 16, F_NEXT | F_WRITE, 1); D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(VIRTIO_MMIO, 64, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(RAM_END - 32, 64, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(3, 24, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(3, 0xfffffff0, F_INDIRECT, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 1)
    D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(2, 16, F_NEXT, 1); D(2, 16, F_NEXT, 0); NONE; NONE; SC(0, 1)
    D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; SC(0, 1)
    D(3, 64, F_INDIRECT, 0); NONE; NONE; NONE; D(4, 16, F_NEXT, 1); D(RAM_END, 4096, F_NEXT | F_WRITE, 2); D(2, 1, F_WRITE, 9); NONE; SC(0, 1)
    D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0xffff, 1)
    D(2, 16, 0, 0); NONE; NONE; NONE; NONE; NONE; NONE; NONE; SC(0, 0x8000)
    .quad -1

    .data
    .balign 8
slot_ids:       .fill SLOTS, 8, 0
blk_slot:       .long 0
    .balign 8
needs_reset:    .quad 0
