/* migrate_counter: a guest that shows whether a migrated, snapshotted or stopped-and-continued
 * microvm goes on exactly where it was (the x86-64 twin of riscv/migrate_counter.S).
 *
 * It prints "count N" (decimal, N = 1, 2, 3, ...) on COM1 every 10 ms of guest time until it
 * has printed "count LIMIT"; then "migrate_counter done" and the exit port with code 0 (swemu
 * exits 1). Guest time is the TSC; its rate comes from kvmclock (tsc_to_system_mul/tsc_shift,
 * read once at start, then the MSR is cleared again), or, off KVM, from 50 ms of PIT channel 2.
 * Between two counts it sleeps with `sti; hlt` until the local APIC timer interrupt (vector
 * 0x40) arrives: TSC-deadline mode (IA32_TSC_DEADLINE) when CPUID offers it, else (or with
 * "timer=oneshot" on the command line) one-shot mode with an initial count scaled from a
 * measured APIC-to-TSC ratio. It never polls the clock to wait, so a restored machine whose
 * APIC timer or TSC did not travel stops printing.
 * Schedule: count N is due N * 10 ms after the start; a late count catches up at once unless it
 * is 0.5 s late, then the schedule restarts from now.
 *
 * Why two privilege levels: KVM on this project's hosts is PVM (the field notes), which
 * emulates guest kernel mode (CPL0) one instruction at a time (measured: about 2 million
 * instructions a second; `rep stosq` over 4 MiB takes 0.27 s) while guest user mode runs at
 * native speed. So the count loop, with its 4 MiB buffer, runs at CPL3 on page tables of its
 * own (U/S set everywhere, 2 MiB pages over the first 4 GiB) and asks CPL0 through
 * `int $0x80` to sleep, print and exit; CPL0 owns the APIC, the UART and the exit port. PVM
 * raises #UD for `int $n` in user mode (any n), so the #UD handler takes a #UD at `cd 80` from
 * CPL3 as the same call; elsewhere the DPL-3 gate 0x80 does.
 *
 * Checks, each before printing count N:
 * - the buffer (BUF_BYTES = 4 MiB, every 8-byte word of every page) still holds the pattern
 *   written after count N-1: word at address A == A ^ K(N-1), K(n) = (n + 1) * PATTERN0; every
 *   word is compared (a whole-buffer checksum that also says where the first difference is).
 *   Then, after printing count N, the whole buffer is rewritten with K(N). A difference prints
 *   "BAD checksum at count N" and "  word 0x.. holds 0x.. expected 0x..", exit code 1
 *   (swemu exits 3).
 * - the count in a register (r12) equals the count in memory (count_mem): otherwise
 *   "BAD state at count N" and "  register R memory M", exit code 2 (swemu exits 5).
 * - the TSC moved by at most 0.5 s since the previous count, in either direction (compared
 *   unsigned): otherwise "clock jumped" (not fatal). Note: swemu's microvm lets the TSC run
 *   while the VM is stopped (checked with the monitor's stop and cont), so a stop longer than
 *   0.5 s prints it.
 * An unexpected exception prints "BAD trap vector V error 0x.. rip 0x.." and exits with code 4
 * (swemu exits 9).
 *
 * LIMIT: "limit=N" on the command line (-append "limit=N"), else the 8-byte global
 * `migrate_limit` (`.equ LIMIT` below, 1000000, patchable in the ELF). Output, one line each:
 * "migrate_counter start limit L timer T tsc_khz F (S)" (T: tsc-deadline or oneshot; S: kvmclock
 * or pit), then "count 1" ... "count L", then "migrate_counter done".
 *
 * Only the boot CPU runs it; with -smp N the other CPUs are never started.
 * Build with -DMIGRATE_CORRUPT_AT=n to flip one bit of the buffer after count n: the run must
 * then end with "BAD checksum at count n+1". */
#include "guest.h"

.equ LIMIT, 1000000
.equ BUF_BYTES, 4 << 20
.equ PATTERN0, 0x9e3779b97f4a7c15
.equ PIT_TICKS, 59659                   /* 50 ms of the PIT's 1193182 Hz */
.equ PIT_HZ, 1193182
.equ COUNTS_PER_S, 100                  /* 10 ms per count */
.equ JUMP_INTERVALS, 50                 /* 0.5 s */
.equ TIMER_VECTOR, 0x40
.equ SYSCALL_VECTOR, 0x80
.equ SPURIOUS_VECTOR, 0xff

#define LAPIC_EOI       0xb0
#define LAPIC_SVR       0xf0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TMICT     0x380
#define LAPIC_TMCCT     0x390
#define LAPIC_TDCR      0x3e0
#define MSR_TSC_DEADLINE 0x6e0
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

/* Selectors in this program's GDT (0x10 and 0x18 as the boot protocol's, so CS needs no reload) */
#define KERNEL_CS       0x10
#define KERNEL_DS       0x18
#define USER_DS         (0x20 | 3)
#define USER_CS         (0x28 | 3)
#define TSS_SELECTOR    0x30

/* int $0x80 services: %eax = number */
#define SYS_EXIT        0                   /* %edi = code */
#define SYS_SLEEP       1                   /* %rdi = TSC deadline */
#define SYS_PUTS        2                   /* %rsi = string */
#define SYS_PUTDEC      3                   /* %rdi = value */
#define SYS_PUTHEX      4                   /* %rdi = value */

/* Exit codes (swemu exits code * 2 + 1) */
#define FAIL_CHECKSUM   1
#define FAIL_STATE      2
#define FAIL_TRAP       4

    .text
    .globl main
/* ================================================================= CPL0: setup */
main:
    push    %rbx
    call    calibrate
    call    read_command_line
    call    setup_paging
    call    setup_descriptors
    call    setup_apic

    lea     start_text(%rip), %rsi
    call    puts
    mov     limit(%rip), %rdi
    call    putdec
    lea     timer_text(%rip), %rsi
    call    puts
    lea     deadline_text(%rip), %rsi
    cmpl    $0, oneshot(%rip)
    je      1f
    lea     oneshot_text(%rip), %rsi
1:  call    puts
    lea     khz_text(%rip), %rsi
    call    puts
    mov     tsc_khz(%rip), %rdi
    call    putdec
    lea     pit_text(%rip), %rsi
    cmpl    $0, from_kvmclock(%rip)
    je      2f
    lea     kvmclock_text(%rip), %rsi
2:  call    puts

    /* to CPL3: SS, RSP, RFLAGS (IF), CS, RIP */
    push    $USER_DS
    lea     user_stack_top(%rip), %rax
    push    %rax
    push    $0x202
    push    $USER_CS
    lea     user_main(%rip), %rax
    push    %rax
    iretq

/* calibrate: the TSC's rate, from kvmclock (KVM's pvclock: tsc_to_system_mul and tsc_shift,
 * MSR_KVM_SYSTEM_TIME_NEW) when the hypervisor offers it, else measured over 50 ms of PIT
 * channel 2 (mode 0, gate on, speaker off; port 0x61 bit 5 is its output, high once the count
 * ran out), which a busy host can skew by a few per cent. Then the local APIC timer's rate
 * against the TSC (divide by 1, counting down from 0xffffffff, masked; each end read right
 * after the TSC), for one-shot mode. Sets tsc_khz, interval, jump_max, apic_per_tsc_num/den. */
calibrate:
    mov     $0x40000000, %eax
    cpuid
    cmp     $0x4b4d564b, %ebx               /* "KVMKVMKVM" */
    jne     calibrate_pit
    cmp     $0x40000001, %eax
    jb      calibrate_pit
    mov     $0x40000001, %eax
    cpuid
    test    $(1 << 3), %eax                 /* KVM_FEATURE_CLOCKSOURCE2 */
    jz      calibrate_pit
    lea     pvclock(%rip), %rax
    or      $1, %rax                        /* enable */
    mov     %rax, %rdx
    shr     $32, %rdx
    mov     $MSR_KVM_SYSTEM_TIME_NEW, %ecx
    wrmsr
    mov     $1000000, %r8d                  /* the host fills it in before the next entry */
1:  mov     pvclock(%rip), %eax             /* version: even when consistent */
    test    $1, %eax
    jnz     2f
    mov     pvclock + 24(%rip), %esi        /* tsc_to_system_mul */
    movsbl  pvclock + 28(%rip), %edi        /* tsc_shift */
    cmp     pvclock(%rip), %eax
    jne     2f
    test    %esi, %esi
    jnz     3f
2:  dec     %r8d
    jnz     1b
    call    kvmclock_off
    jmp     calibrate_pit
3:  call    kvmclock_off
    /* ns = ((tsc << shift) * mul) >> 32, so Hz = (10^9 << 32) / mul, shifted back by shift */
    movabs  $(1000000000 << 32), %rax
    xor     %edx, %edx
    div     %rsi
    mov     %edi, %ecx
    test    %ecx, %ecx
    js      4f
    shr     %cl, %rax
    jmp     5f
4:  neg     %ecx
    shl     %cl, %rax
5:  movl    $1, from_kvmclock(%rip)
    jmp     calibrate_rates

calibrate_pit:
    inb     $0x61, %al
    and     $0xfc, %al
    or      $1, %al
    outb    %al, $0x61
    mov     $0xb0, %al                      /* channel 2, lobyte/hibyte, mode 0, binary */
    outb    %al, $0x43
    mov     $(PIT_TICKS & 0xff), %al
    outb    %al, $0x42
    mov     $(PIT_TICKS >> 8), %al
    outb    %al, $0x42
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    mov     %rax, %r8
1:  inb     $0x61, %al
    test    $0x20, %al
    jz      1b
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    sub     %r8, %rax                       /* Hz = ticks * PIT_HZ / PIT_TICKS */
    mov     $PIT_HZ, %ecx
    mul     %rcx
    mov     $PIT_TICKS, %ecx
    div     %rcx

/* calibrate_rates: %rax = TSC Hz */
calibrate_rates:
    mov     %rax, %r9
    xor     %edx, %edx
    mov     $COUNTS_PER_S, %ecx
    div     %rcx
    mov     %rax, interval(%rip)
    mov     $JUMP_INTERVALS, %ecx
    mul     %rcx
    mov     %rax, jump_max(%rip)
    mov     %r9, %rax
    xor     %edx, %edx
    mov     $1000, %ecx
    div     %rcx
    mov     %rax, tsc_khz(%rip)

    mov     $LAPIC, %ebx
    movl    $0x1ff, LAPIC_SVR(%rbx)
    movl    $0xb, LAPIC_TDCR(%rbx)          /* divide by 1 */
    movl    $(1 << 16 | TIMER_VECTOR), LAPIC_LVT_TIMER(%rbx)  /* masked, one-shot */
    movl    $0xffffffff, LAPIC_TMICT(%rbx)
    rdtsc
    mov     LAPIC_TMCCT(%rbx), %r10d
    shl     $32, %rdx
    or      %rdx, %rax
    mov     %rax, %r8
    mov     interval(%rip), %rcx
    add     %rcx, %rcx                      /* 20 ms */
    add     %rax, %rcx
1:  rdtsc
    mov     LAPIC_TMCCT(%rbx), %r11d
    shl     $32, %rdx
    or      %rdx, %rax
    cmp     %rcx, %rax
    jb      1b
    movl    $0, LAPIC_TMICT(%rbx)           /* stop it */
    sub     %r8, %rax
    mov     %rax, apic_per_tsc_den(%rip)
    sub     %r11, %r10
    mov     %r10, apic_per_tsc_num(%rip)
    ret

kvmclock_off:
    xor     %eax, %eax
    xor     %edx, %edx
    mov     $MSR_KVM_SYSTEM_TIME_NEW, %ecx
    wrmsr
    ret

/* read_command_line: limit = "limit=N" if given, else migrate_limit; oneshot = 1 with
 * "timer=oneshot" or without TSC-deadline support (CPUID.1:ECX[24]). */
read_command_line:
    mov     migrate_limit(%rip), %rax
    mov     %rax, limit(%rip)
    mov     zero_page(%rip), %rbx
    mov     BP_CMD_LINE_PTR(%rbx), %ebx     /* 32-bit physical address */
1:  cmpb    $0, (%rbx)
    je      4f
    lea     limit_word(%rip), %rsi
    xor     %ecx, %ecx
2:  movzbl  (%rsi,%rcx), %edx
    test    %dl, %dl
    jz      3f                              /* "limit=" matched */
    cmp     (%rbx,%rcx), %dl
    jne     5f
    inc     %rcx
    jmp     2b
3:  add     %rcx, %rbx
    xor     %eax, %eax
6:  movzbl  (%rbx), %edx
    sub     $'0', %edx
    cmp     $9, %edx
    ja      7f
    imul    $10, %rax, %rax
    add     %rdx, %rax
    inc     %rbx
    jmp     6b
7:  mov     %rax, limit(%rip)
    jmp     1b
5:  inc     %rbx
    jmp     1b
4:  lea     oneshot_word(%rip), %rsi
    call    cmdline_has
    jnz     8f
    mov     $1, %eax
    push    %rbx
    cpuid
    pop     %rbx
    bt      $24, %ecx
    jc      9f
8:  movl    $1, oneshot(%rip)
9:  ret

/* setup_paging: PML4 -> PDPT -> four page directories of 2 MiB pages mapping the first 4 GiB
 * (RAM, the MMIO hole, the local APIC) with present, writable and user set at every level. */
setup_paging:
    lea     pdpt(%rip), %rax
    or      $7, %rax
    mov     %rax, pml4(%rip)
    lea     pd(%rip), %rax
    or      $7, %rax
    lea     pdpt(%rip), %rdi
    mov     $4, %ecx
1:  mov     %rax, (%rdi)
    add     $0x1000, %rax
    add     $8, %rdi
    loop    1b
    lea     pd(%rip), %rdi
    mov     $0x87, %eax                     /* present, writable, user, 2 MiB */
    mov     $2048, %ecx
2:  mov     %rax, (%rdi)
    add     $0x200000, %rax
    add     $8, %rdi
    loop    2b
    lea     pml4(%rip), %rax
    mov     %rax, %cr3
    ret

/* setup_descriptors: the GDT's TSS descriptor, the TSS's RSP0, the IDT (exceptions 0-31, the
 * timer, the int $0x80 gate open to CPL3, the spurious vector), then lgdt, ltr, lidt. */
setup_descriptors:
    lea     tss(%rip), %rax                 /* 64-bit TSS descriptor (SDM Vol. 3 7.2.3) */
    mov     %rax, %rdx
    shl     $16, %rdx
    mov     $0xffffff0000, %rcx
    and     %rcx, %rdx                      /* base 23:0 at bits 39:16 */
    or      $103, %rdx                      /* limit */
    mov     $0x89, %ecx                     /* present, type 9 (available 64-bit TSS) */
    shl     $40, %rcx
    or      %rcx, %rdx
    mov     %rax, %rcx
    shr     $24, %rcx
    and     $0xff, %ecx
    shl     $56, %rcx
    or      %rcx, %rdx
    mov     %rdx, gdt + TSS_SELECTOR(%rip)
    shr     $32, %rax
    mov     %rax, gdt + TSS_SELECTOR + 8(%rip)
    lea     kernel_stack_top(%rip), %rax
    mov     %rax, tss + 4(%rip)             /* RSP0 */
    movw    $104, tss + 102(%rip)           /* no I/O bitmap */

    xor     %ebx, %ebx                      /* exceptions */
1:  lea     exception_stubs(%rip), %rax
    mov     (%rax,%rbx,8), %rax
    mov     $0x8e00, %edx
    call    set_gate
    inc     %ebx
    cmp     $32, %ebx
    jne     1b
    mov     $TIMER_VECTOR, %ebx
    lea     timer_interrupt(%rip), %rax
    mov     $0x8e00, %edx
    call    set_gate
    mov     $SYSCALL_VECTOR, %ebx
    lea     syscall_entry(%rip), %rax
    mov     $0xee00, %edx                   /* DPL 3: user mode may raise it */
    call    set_gate
    mov     $SPURIOUS_VECTOR, %ebx
    lea     spurious_interrupt(%rip), %rax
    mov     $0x8e00, %edx
    call    set_gate

    lea     gdt(%rip), %rax
    mov     %rax, gdtr + 2(%rip)
    lgdt    gdtr(%rip)
    mov     $KERNEL_DS, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     $TSS_SELECTOR, %eax
    ltr     %ax
    lea     idt(%rip), %rax
    mov     %rax, idtr + 2(%rip)
    lidt    idtr(%rip)
    ret

/* set_gate: IDT entry %ebx = a 64-bit interrupt gate to %rax, attributes %dx (SDM Vol. 3 6.14.1) */
set_gate:
    lea     idt(%rip), %rdi
    mov     %rbx, %rcx
    shl     $4, %rcx
    add     %rcx, %rdi
    mov     %ax, (%rdi)
    movw    $KERNEL_CS, 2(%rdi)
    mov     %dx, 4(%rdi)
    shr     $16, %rax
    mov     %ax, 6(%rdi)
    shr     $16, %rax
    mov     %eax, 8(%rdi)
    movl    $0, 12(%rdi)
    ret

/* setup_apic: the 8259s masked, the local APIC on (spurious vector 0xff), its timer on
 * TIMER_VECTOR in TSC-deadline or one-shot mode, disarmed. */
setup_apic:
    mov     $0xff, %al
    outb    %al, $0x21
    outb    %al, $0xa1
    mov     $LAPIC, %ebx
    movl    $(0x100 | SPURIOUS_VECTOR), LAPIC_SVR(%rbx)
    movl    $0xb, LAPIC_TDCR(%rbx)
    mov     $(2 << 17 | TIMER_VECTOR), %eax /* TSC-deadline */
    cmpl    $0, oneshot(%rip)
    je      1f
    mov     $TIMER_VECTOR, %eax             /* one-shot */
1:  mov     %eax, LAPIC_LVT_TIMER(%rbx)
    movl    $0, LAPIC_TMICT(%rbx)
    ret

/* putdec: %rdi = unsigned value, in decimal (all registers kept). */
putdec:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rdi
    sub     $32, %rsp
    mov     %rdi, %rax
    lea     32(%rsp), %rcx
    mov     $10, %edi
1:  xor     %edx, %edx
    div     %rdi
    add     $'0', %edx
    dec     %rcx
    mov     %dl, (%rcx)
    test    %rax, %rax
    jnz     1b
2:  movzbl  (%rcx), %edi
    call    putc
    inc     %rcx
    lea     32(%rsp), %rax
    cmp     %rax, %rcx
    jne     2b
    add     $32, %rsp
    pop     %rdi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret

/* ================================================================= CPL0: interrupts */

/* int $0x80 from CPL3 (an interrupt gate: IF is clear here). Keeps every register but %rax. */
syscall_entry:
    cmp     $SYS_SLEEP, %eax
    je      sys_sleep
    cmp     $SYS_PUTS, %eax
    je      sys_puts
    cmp     $SYS_PUTDEC, %eax
    je      sys_putdec
    cmp     $SYS_PUTHEX, %eax
    je      sys_puthex
    mov     %edi, %eax                      /* SYS_EXIT and anything else */
    jmp     exit_with
sys_puts:
    call    puts
    iretq
sys_putdec:
    call    putdec
    iretq
sys_puthex:
    call    puthex
    iretq

/* sys_sleep: arms the APIC timer for TSC %rdi and halts until its interrupt was taken.
 * `sti; hlt`: STI's one-instruction shadow keeps the interrupt from slipping in between. */
sys_sleep:
    push    %rcx
    push    %rdx
    movl    $0, timer_fired(%rip)
    cmpl    $0, oneshot(%rip)
    jne     2f
    mov     %rdi, %rax
    mov     %rdi, %rdx
    shr     $32, %rdx
    mov     $MSR_TSC_DEADLINE, %ecx
    wrmsr
    jmp     3f
2:  /* one-shot: count = (deadline - now) * apic_per_tsc_num / apic_per_tsc_den, at least 1 */
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    mov     %rdi, %rcx
    sub     %rax, %rcx
    mov     $1, %eax
    jbe     5f                              /* due already */
    mov     %rcx, %rax
    shr     $40, %rax                       /* over 2^40 TSC ticks (minutes): the longest count */
    jnz     6f
    mov     %rcx, %rax
    mulq    apic_per_tsc_num(%rip)
    divq    apic_per_tsc_den(%rip)
    mov     $0xffffffff, %ecx
    cmp     %rcx, %rax
    jbe     4f
6:  mov     $0xffffffff, %eax
4:  test    %eax, %eax
    jnz     5f
    mov     $1, %eax
5:  mov     $LAPIC, %ecx
    mov     %eax, LAPIC_TMICT(%rcx)
3:  cmpl    $0, timer_fired(%rip)
    jne     1f
    sti
    hlt
    cli
    jmp     3b
1:  pop     %rdx
    pop     %rcx
    iretq

timer_interrupt:
    push    %rax
    movl    $1, timer_fired(%rip)
    incq    timer_interrupts(%rip)
    mov     $LAPIC, %eax
    movl    $0, LAPIC_EOI(%rax)
    pop     %rax
    iretq

spurious_interrupt:
    iretq

/* Exception stubs: each pushes a zero error code where the CPU pushes none, then its vector. */
.macro STUB v
exception_\v:
    .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    .else
    push    $0
    .endif
    push    $\v
    jmp     exception
.endm
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    STUB \v
.endr

/* exception: the stack holds vector, error code, RIP, CS, RFLAGS, RSP, SS. PVM answers
 * `int $n` in user mode with #UD (checked on kvm_pvm: every vector), so an invalid-opcode
 * exception from CPL3 at an `int $0x80` (cd 80) is taken as that system call. */
exception:
    cmpq    $6, (%rsp)
    jne     1f
    testb   $3, 24(%rsp)                    /* from CPL3 */
    jz      1f
    push    %rax
    mov     24(%rsp), %rax
    cmpw    $(0x80cd), (%rax)
    pop     %rax
    jne     1f
    addq    $2, 16(%rsp)                    /* past the int $0x80 */
    add     $16, %rsp                       /* the frame int $0x80 itself makes */
    jmp     syscall_entry
1:
    lea     trap_text(%rip), %rsi
    call    puts
    mov     (%rsp), %rdi
    call    putdec
    lea     error_text(%rip), %rsi
    call    puts
    mov     8(%rsp), %rdi
    call    puthex
    lea     rip_text(%rip), %rsi
    call    puts
    mov     16(%rsp), %rdi
    call    puthex
    call    newline
    mov     $FAIL_TRAP, %eax
    jmp     exit_with

/* ================================================================= CPL3: the count loop */
.macro SYS n
    mov     $\n, %eax
    int     $SYSCALL_VECTOR
.endm
.macro PRINT label
    lea     \label(%rip), %rsi
    SYS     SYS_PUTS
.endm
.macro RDTSC64 reg
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    mov     %rax, \reg
.endm

/* r12: the count (register copy); r13: the next deadline; r14: TSC at the previous count;
 * r15: the limit; rbx, rbp: the buffer. */
user_main:
    mov     limit(%rip), %r15
    lea     buffer(%rip), %rbx
    lea     BUF_BYTES(%rbx), %rbp
    xor     %r12d, %r12d
    movq    $0, count_mem(%rip)
    xor     %edi, %edi
    call    pattern
    mov     %rbx, %rdi
    mov     %rbp, %rsi
    call    fill
    RDTSC64 %r14
    mov     %r14, %r13
    add     interval(%rip), %r13

count_loop:
    mov     %r13, %rdi
    SYS     SYS_SLEEP
    RDTSC64 %rcx
    mov     %rcx, %rax
    sub     %r14, %rax
    mov     %rcx, %r14
    cmp     jump_max(%rip), %rax
    jbe     1f
    PRINT   jumped_text
1:
    cmp     count_mem(%rip), %r12
    jne     bad_state
    mov     %r12, %rdi
    call    pattern
    mov     %rbx, %rdi
    mov     %rbp, %rsi
    call    verify
    test    %rax, %rax
    jnz     bad_checksum

    inc     %r12
    incq    count_mem(%rip)
    PRINT   count_text
    mov     %r12, %rdi
    SYS     SYS_PUTDEC
    PRINT   newline_text
    cmp     %r15, %r12
    je      done

    mov     %r12, %rdi
    call    pattern
    mov     %rbx, %rdi
    mov     %rbp, %rsi
    call    fill
#ifdef MIGRATE_CORRUPT_AT
    cmp     $MIGRATE_CORRUPT_AT, %r12
    jne     2f
    xorq    $1, (BUF_BYTES / 2 + 0x123 * 8)(%rbx)
2:
#endif
    /* next deadline: a late count catches up at once, unless 0.5 s late: restart from now */
    add     interval(%rip), %r13
    RDTSC64 %rcx
    mov     %r13, %rax
    add     jump_max(%rip), %rax
    cmp     %rax, %rcx
    jb      count_loop
    mov     %rcx, %r13
    add     interval(%rip), %r13
    jmp     count_loop

done:
    PRINT   done_text
    xor     %edi, %edi
    SYS     SYS_EXIT

bad_state:
    PRINT   bad_state_text
    lea     1(%r12), %rdi
    SYS     SYS_PUTDEC
    PRINT   register_text
    mov     %r12, %rdi
    SYS     SYS_PUTDEC
    PRINT   memory_text
    mov     count_mem(%rip), %rdi
    SYS     SYS_PUTDEC
    PRINT   newline_text
    mov     $FAIL_STATE, %edi
    SYS     SYS_EXIT

bad_checksum:                               /* %rax: address, %rcx: found, %rdx: K */
    mov     %rax, %rbx
    mov     %rcx, %rbp
    xor     %rax, %rdx
    mov     %rdx, %r13
    PRINT   bad_checksum_text
    lea     1(%r12), %rdi
    SYS     SYS_PUTDEC
    PRINT   word_text
    mov     %rbx, %rdi
    SYS     SYS_PUTHEX
    PRINT   holds_text
    mov     %rbp, %rdi
    SYS     SYS_PUTHEX
    PRINT   expected_text
    mov     %r13, %rdi
    SYS     SYS_PUTHEX
    PRINT   newline_text
    mov     $FAIL_CHECKSUM, %edi
    SYS     SYS_EXIT

/* pattern: %rdx = K(%rdi) = (%rdi + 1) * PATTERN0 */
pattern:
    lea     1(%rdi), %rax
    movabs  $PATTERN0, %rdx
    imul    %rax, %rdx
    ret

/* fill: every 8-byte word at address A in [%rdi, %rsi) becomes A ^ %rdx. */
fill:
1:  mov     %rdi, %rax
    xor     %rdx, %rax
    mov     %rax, (%rdi)
    add     $8, %rdi
    cmp     %rsi, %rdi
    jne     1b
    ret

/* verify: %rax = 0 when every word at A in [%rdi, %rsi) is A ^ %rdx; else %rax = the first
 * differing word's address and %rcx = what it holds. */
verify:
1:  mov     (%rdi), %rax
    xor     %rdi, %rax
    cmp     %rdx, %rax
    jne     2f
    add     $8, %rdi
    cmp     %rsi, %rdi
    jne     1b
    xor     %eax, %eax
    ret
2:  mov     %rax, %rcx
    xor     %rdi, %rcx
    mov     %rdi, %rax
    ret

    .data
    .balign 8
    .globl migrate_limit
migrate_limit:  .quad LIMIT
    .type migrate_limit, @object
    .size migrate_limit, 8
limit:          .quad 0
count_mem:      .quad 0
interval:       .quad 0
jump_max:       .quad 0
tsc_khz:        .quad 0
apic_per_tsc_num: .quad 0
apic_per_tsc_den: .quad 0
timer_interrupts: .quad 0
timer_fired:    .long 0
oneshot:        .long 0
from_kvmclock:  .long 0
    .balign 32
pvclock:        .zero 32                    /* struct pvclock_vcpu_time_info */
    .balign 16
gdt:            .quad 0, 0
                .quad 0x00af9b000000ffff    /* 0x10 kernel code, 64-bit */
                .quad 0x00cf93000000ffff    /* 0x18 kernel data */
                .quad 0x00cff3000000ffff    /* 0x20 user data, DPL 3 */
                .quad 0x00affb000000ffff    /* 0x28 user code, 64-bit, DPL 3 */
                .quad 0, 0                  /* 0x30 TSS, filled in */
gdt_end:
    .balign 16
gdtr:           .word gdt_end - gdt - 1
                .quad 0
    .balign 16
idtr:           .word 256 * 16 - 1
                .quad 0
exception_stubs:
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_\v
.endr

    .section .rodata
start_text:     .asciz "migrate_counter start limit "
timer_text:     .asciz " timer "
deadline_text:  .asciz "tsc-deadline"
oneshot_text:   .asciz "oneshot"
khz_text:       .asciz " tsc_khz "
kvmclock_text:  .asciz " (kvmclock)\n"
pit_text:       .asciz " (pit)\n"
limit_word:     .asciz "limit="
oneshot_word:   .asciz "timer=oneshot"
count_text:     .asciz "count "
newline_text:   .asciz "\n"
done_text:      .asciz "migrate_counter done\n"
jumped_text:    .asciz "clock jumped\n"
bad_state_text: .asciz "BAD state at count "
bad_checksum_text: .asciz "BAD checksum at count "
register_text:  .asciz "\n  register "
memory_text:    .asciz " memory "
word_text:      .asciz "\n  word "
holds_text:     .asciz " holds "
expected_text:  .asciz " expected "
trap_text:      .asciz "BAD trap vector "
error_text:     .asciz " error "
rip_text:       .asciz " rip "

    .bss
    .balign 4096
pml4:           .zero 4096
pdpt:           .zero 4096
pd:             .zero 4 * 4096
idt:            .zero 256 * 16
tss:            .zero 104
    .balign 16
                .zero 16384
kernel_stack_top:
                .zero 16384
user_stack_top:
    .balign 4096
buffer:         .zero BUF_BYTES
