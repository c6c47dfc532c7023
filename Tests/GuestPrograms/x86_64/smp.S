/* smp: starts every other CPU the way Linux does (Intel SDM Vol. 3 8.4.4.1, MP spec B.4:
 * INIT, then two STARTUP IPIs to a real-mode trampoline below 1 MiB), brings each from real mode
 * through protected mode into long mode with swemu's GDT (0x500) and page tables (0x9000), and
 * lets the CPUs print "cpu N: apic id N" in APIC-id order. The BSP learns the CPU count from
 * CPUID.1:EBX[23:16]. Exit code 0 when all reported; 1 when some never came. */
#include "guest.h"

#define TRAMPOLINE      0x3000          /* SIPI vector 3 */
#define ICR_LOW         0x300
#define ICR_HIGH        0x310
/* ICR: destination shorthand "all excluding self" (bits 19:18 = 11), level assert (bit 14) */
#define ICR_INIT        0x000c4500
#define ICR_STARTUP     (0x000c4600 | (TRAMPOLINE >> 12))
#define AP_STACKS       0x200000        /* AP n uses the 4 KiB below AP_STACKS + (n + 1) * 4096 */

    .text
    .globl main
main:
    push    %rbx
    /* Copy the trampoline to 0x3000. */
    lea     trampoline_start(%rip), %rsi
    mov     $TRAMPOLINE, %edi
    mov     $(trampoline_end - trampoline_start), %ecx
    rep movsb

    call    report                      /* the BSP goes first: it is APIC id 0 */

    mov     $LAPIC, %ebx
    movl    $0, ICR_HIGH(%rbx)
    movl    $ICR_INIT, ICR_LOW(%rbx)
    mov     $100000, %ecx               /* MP spec: wait after INIT (KVM delivers it at once) */
1:  pause
    loop    1b
    movl    $ICR_STARTUP, ICR_LOW(%rbx)
    mov     $10000, %ecx
2:  pause
    loop    2b
    movl    $ICR_STARTUP, ICR_LOW(%rbx)

    mov     $1, %eax
    cpuid
    shr     $16, %ebx
    and     $0xff, %ebx                 /* logical processors */
    mov     $2000000000, %rcx           /* give up eventually: a missing CPU must not hang the test */
3:  cmp     %ebx, turn(%rip)
    je      4f
    pause
    dec     %rcx
    jnz     3b
    lea     missing_text(%rip), %rsi
    call    puts
    mov     $1, %eax
    pop     %rbx
    ret
4:  lea     all_text(%rip), %rsi
    call    puts
    xor     %eax, %eax
    pop     %rbx
    ret

/* report: waits until `turn` equals this CPU's APIC id, prints, and passes the turn on. Only the
 * CPU whose turn it is writes `turn`, so plain loads and stores are enough. */
report:
    call    apic_id
    mov     %eax, %edx
1:  cmp     turn(%rip), %edx
    je      2f
    pause
    jmp     1b
2:  lea     cpu_text(%rip), %rsi
    call    puts
    mov     %rdx, %rdi
    call    puthex
    lea     apic_text(%rip), %rsi
    call    puts
    call    apic_id
    mov     %rax, %rdi
    call    puthex
    call    newline
    incl    turn(%rip)
    ret

/* Where each AP arrives in long mode. */
ap_main:
    mov     $1, %eax                    /* no stack yet: the APIC id straight from CPUID */
    cpuid
    shr     $24, %ebx
    inc     %ebx
    shl     $12, %ebx
    add     $AP_STACKS, %ebx
    mov     %rbx, %rsp
    call    report
1:  cli
    hlt
    jmp     1b

/* The trampoline runs at TRAMPOLINE, entered by STARTUP with CS = TRAMPOLINE >> 4, IP = 0. */
#define T(label) (TRAMPOLINE + (label) - trampoline_start)
    .code16
trampoline_start:
    cli
    lgdtl   %cs:(gdtr - trampoline_start)
    mov     %cr0, %eax
    or      $1, %eax                    /* PE */
    mov     %eax, %cr0
    ljmpl   $0x20, $T(protected)        /* swemu's GDT: 0x20 = flat 32-bit code */
    .code32
protected:
    mov     $0x18, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     $0x20, %eax                 /* CR4.PAE */
    mov     %eax, %cr4
    mov     $0x9000, %eax               /* swemu's identity-mapping PML4 */
    mov     %eax, %cr3
    mov     $0xc0000080, %ecx           /* EFER.LME */
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000000, %eax           /* PG: long mode is active from here */
    mov     %eax, %cr0
    ljmpl   $0x10, $T(long)
    .code64
long:
    movabs  $ap_main, %rax
    jmp     *%rax
    .balign 8
gdtr:
    .word   5 * 8 - 1
    .long   0x500
trampoline_end:

    .data
turn:   .long 0

    .section .rodata
cpu_text:       .asciz "cpu "
apic_text:      .asciz ": apic id "
all_text:       .asciz "all cpus reported\n"
missing_text:   .asciz "some cpus never reported\n"
