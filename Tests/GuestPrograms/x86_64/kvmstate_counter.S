/* kvmstate_counter: counts forever, one line per step, for the saved-state tests
 * (Tests/KVMTests/KVMStateTests.swift): a machine is paused, saved, restored into a new one and
 * must go on where it stopped. Before counting it puts state in the places a restore must carry
 * over, and every step checks that state is still there:
 *   MSRs          SYSENTER_CS/ESP/EIP, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, PAT, and
 *                 MSR_KVM_SYSTEM_TIME_NEW (kvmclock, which it then reads every step)
 *   local APIC    TPR (offset 0x80)
 *   IOAPIC        redirection entry of pin 9 (masked, vector 0x39)
 *   8259 PIC      the master's interrupt mask
 *   8254 PIT      channel 0 in mode 2, lobyte/hibyte, read back through the read-back command
 *   DR0-DR3       addresses (never armed: DR7 stays 0)
 * A line is "n=<register count> m=<memory count> t=<kvmclock ns>"; the counter in r12 tests
 * the registers, the one in memory tests RAM, t must never go back. A check that fails prints
 * "wrong <what> <value>" and exits with code 3.
 * Only general-purpose registers and CPL0, as the other programs (guest.h). */
#include "guest.h"

#define IOAPIC          0xfec00000
#define IOAPIC_WINDOW   0x10
#define IOAPIC_PIN9_LOW (0x10 + 2 * 9)
#define PIN9_ENTRY      0x10039         /* masked (bit 16), fixed delivery, vector 0x39 */
#define LAPIC_TPR       0x80
#define TPR_VALUE       0x20
#define PIC_MASTER_DATA 0x21
#define PIC_MASK        0xfb            /* everything but the cascade (IRQ 2) masked */
#define PIT_CHANNEL0    0x40
#define PIT_COMMAND     0x43
#define PIT_MODE2       0x34            /* channel 0, lobyte/hibyte, mode 2, binary */
#define PIT_READ_BACK   0xe2            /* read-back: latch channel 0's status only */
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

    .text
    .globl main
main:
    /* MSRs, from the table (index, value) ended by index 0. */
    lea     msr_table(%rip), %rsi
1:  mov     (%rsi), %ecx
    test    %ecx, %ecx
    jz      2f
    mov     8(%rsi), %eax
    mov     12(%rsi), %edx
    wrmsr
    add     $16, %rsi
    jmp     1b
2:
    /* kvmclock: the pvclock structure at `pvclock`, enable bit 0. */
    lea     pvclock(%rip), %rax
    or      $1, %rax
    mov     %rax, kvmclock_msr(%rip)
    xor     %edx, %edx
    mov     $MSR_KVM_SYSTEM_TIME_NEW, %ecx
    wrmsr

    mov     $LAPIC, %ebx
    movl    $TPR_VALUE, LAPIC_TPR(%rbx)

    mov     $IOAPIC, %ebx
    movl    $IOAPIC_PIN9_LOW, (%rbx)
    movl    $PIN9_ENTRY, IOAPIC_WINDOW(%rbx)

    mov     $PIC_MASK, %al
    outb    %al, $PIC_MASTER_DATA

    mov     $PIT_MODE2, %al
    outb    %al, $PIT_COMMAND
    mov     $0xff, %al
    outb    %al, $PIT_CHANNEL0
    outb    %al, $PIT_CHANNEL0

    mov     $0x1000, %rax
    mov     %rax, %db0
    mov     $0x2000, %rax
    mov     %rax, %db1
    mov     $0x3000, %rax
    mov     %rax, %db2
    mov     $0x4000, %rax
    mov     %rax, %db3

    xor     %r12d, %r12d
count:
    inc     %r12
    incq    counter(%rip)
    call    check
    call    clock_ns
    cmp     last_ns(%rip), %rax
    jae     3f
    lea     wrong_clock(%rip), %rsi
    mov     %rax, %rdi
    jmp     wrong
3:  mov     %rax, last_ns(%rip)

    lea     n_label(%rip), %rsi
    call    puts
    mov     %r12, %rdi
    call    puthex
    lea     m_label(%rip), %rsi
    call    puts
    mov     counter(%rip), %rdi
    call    puthex
    lea     t_label(%rip), %rsi
    call    puts
    mov     last_ns(%rip), %rdi
    call    puthex
    call    newline
    jmp     count

/* check: every piece of state set up above is still there; else `wrong`. */
check:
    lea     msr_table(%rip), %rsi
1:  mov     (%rsi), %ecx
    test    %ecx, %ecx
    jz      2f
    rdmsr
    shl     $32, %rdx
    or      %rdx, %rax
    cmp     8(%rsi), %rax
    jne     wrong_msr
    add     $16, %rsi
    jmp     1b
2:  mov     $MSR_KVM_SYSTEM_TIME_NEW, %ecx
    rdmsr
    shl     $32, %rdx
    or      %rdx, %rax
    cmp     kvmclock_msr(%rip), %rax
    jne     wrong_msr

    mov     $LAPIC, %ebx
    mov     LAPIC_TPR(%rbx), %eax
    cmp     $TPR_VALUE, %eax
    lea     wrong_tpr(%rip), %rsi
    jne     wrong_eax

    mov     $IOAPIC, %ebx
    movl    $IOAPIC_PIN9_LOW, (%rbx)
    mov     IOAPIC_WINDOW(%rbx), %eax
    cmp     $PIN9_ENTRY, %eax
    lea     wrong_ioapic(%rip), %rsi
    jne     wrong_eax

    xor     %eax, %eax
    inb     $PIC_MASTER_DATA, %al
    cmp     $PIC_MASK, %al
    lea     wrong_pic(%rip), %rsi
    jne     wrong_eax

    mov     $PIT_READ_BACK, %al
    outb    %al, $PIT_COMMAND
    xor     %eax, %eax
    inb     $PIT_CHANNEL0, %al
    and     $0x3f, %al                  /* rw mode, mode, BCD (bit 7 is the output, bit 6 unused) */
    cmp     $PIT_MODE2, %al
    lea     wrong_pit(%rip), %rsi
    jne     wrong_eax

    mov     %db0, %rax
    cmp     $0x1000, %rax
    jne     wrong_dr
    mov     %db1, %rax
    cmp     $0x2000, %rax
    jne     wrong_dr
    mov     %db2, %rax
    cmp     $0x3000, %rax
    jne     wrong_dr
    mov     %db3, %rax
    cmp     $0x4000, %rax
    jne     wrong_dr
    ret

wrong_msr:
    lea     wrong_msr_text(%rip), %rsi
    call    puts
    mov     %ecx, %edi
    call    puthex
    mov     $' ', %edi
    call    putc
    mov     %rax, %rdi
    jmp     wrong_value
wrong_dr:
    lea     wrong_dr_text(%rip), %rsi
    mov     %rax, %rdi
    jmp     wrong
wrong_eax:
    mov     %eax, %edi
/* wrong: %rsi = what, %rdi = the value found. */
wrong:
    call    puts
wrong_value:
    call    puthex
    call    newline
    mov     $3, %eax
    jmp     exit_with

/* clock_ns: %rax = kvmclock in nanoseconds (Documentation/virt/kvm/x86/msr.rst,
 * pvclock_vcpu_time_info: version 0, tsc_timestamp 8, system_time 16, tsc_to_system_mul 24,
 * tsc_shift 28): system_time + ((tsc - tsc_timestamp) shifted by tsc_shift) * mul >> 32, read
 * again while the version is odd or changed. */
clock_ns:
    push    %rcx
    push    %rdx
    push    %r8
1:  mov     pvclock(%rip), %r8d
    test    $1, %r8d
    jnz     1b
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    sub     pvclock + 8(%rip), %rax
    movsbl  pvclock + 28(%rip), %ecx
    test    %ecx, %ecx
    js      2f
    shl     %cl, %rax
    jmp     3f
2:  neg     %ecx
    shr     %cl, %rax
3:  mov     pvclock + 24(%rip), %edx
    mul     %rdx
    shrd    $32, %rdx, %rax
    add     pvclock + 16(%rip), %rax
    cmp     pvclock(%rip), %r8d
    jne     1b
    pop     %r8
    pop     %rdx
    pop     %rcx
    ret

    .data
    .balign 16
msr_table:
    .long 0x174, 0
    .quad 0x10                          /* IA32_SYSENTER_CS */
    .long 0x175, 0
    .quad 0x7ff0                        /* IA32_SYSENTER_ESP */
    .long 0x176, 0
    .quad 0xffffffff81000100            /* IA32_SYSENTER_EIP */
    .long 0xc0000081, 0
    .quad 0x0023001000000000            /* STAR */
    .long 0xc0000082, 0
    .quad 0xffffffff81000200            /* LSTAR */
    .long 0xc0000083, 0
    .quad 0xffffffff81000300            /* CSTAR */
    .long 0xc0000084, 0
    .quad 0x47700                       /* SFMASK */
    .long 0xc0000102, 0
    .quad 0x0000123456789000            /* KERNEL_GS_BASE */
    .long 0x277, 0
    .quad 0x0007010600070106            /* PAT: WB, WC, UC-, UC twice (all valid types) */
    .long 0, 0
    .quad 0
    .balign 8
counter:        .quad 0
last_ns:        .quad 0
kvmclock_msr:   .quad 0
    .balign 64
pvclock:        .zero 32

    .section .rodata
n_label:        .asciz "n="
m_label:        .asciz " m="
t_label:        .asciz " t="
wrong_clock:      .asciz "wrong clock went back to "
wrong_msr_text:   .asciz "wrong msr "
wrong_tpr:        .asciz "wrong tpr "
wrong_ioapic:     .asciz "wrong ioapic pin 9 "
wrong_pic:        .asciz "wrong pic mask "
wrong_pit:        .asciz "wrong pit status "
wrong_dr_text:    .asciz "wrong debug register "
