/* hello: prints through the UART, then what the boot protocol handed over: the command line and
 * the e820 map from the zero page; reads an unassigned port and unassigned MMIO (open bus); writes
 * the boot marker; then ends as the command line says:
 *   end=reset     i8042 command 0xfe (the CPU reset line)
 *   end=poweroff  ACPI PM1a control: SLP_TYP 5 (\_S5) | SLP_EN
 *   end=fault     a triple fault (ud2 with an empty IDT: #UD, #DF, shutdown)
 *   end=halt      prints "halted" and stops with interrupts off (the host ends the run)
 *   otherwise     the exit port with code 21 (swemu exits 43) */
#include "guest.h"

    .text
    .globl main
main:
    push    %rbx
    mov     %rdi, %rbx                  /* the zero page */
    lea     hello(%rip), %rsi
    call    puts

    lea     cmdline_label(%rip), %rsi
    call    puts
    mov     BP_CMD_LINE_PTR(%rbx), %esi
    call    puts
    call    newline

    movzbl  BP_E820_ENTRIES(%rbx), %ecx
    lea     BP_E820_TABLE(%rbx), %r8
1:  test    %ecx, %ecx
    jz      2f
    lea     e820_label(%rip), %rsi
    call    puts
    mov     (%r8), %rdi
    call    puthex
    mov     $' ', %edi
    call    putc
    mov     8(%r8), %rdi
    call    puthex
    mov     $' ', %edi
    call    putc
    mov     16(%r8), %edi
    call    puthex
    call    newline
    add     $20, %r8
    dec     %ecx
    jmp     1b
2:
    /* CPUID 0x40000000: the hypervisor's signature in EBX, ECX, EDX ("KVMKVMKVM\0\0\0"). */
    lea     hypervisor_label(%rip), %rsi
    call    puts
    push    %rbx
    mov     $0x40000000, %eax
    cpuid
    mov     %ebx, signature(%rip)
    mov     %ecx, signature + 4(%rip)
    mov     %edx, signature + 8(%rip)
    pop     %rbx
    lea     signature(%rip), %rsi
    call    puts
    call    newline

    lea     port_label(%rip), %rsi
    call    puts
    mov     $0x2f0, %dx                 /* nothing decodes 0x2f0 on this board */
    inl     %dx, %eax
    mov     %eax, %edi
    call    puthex
    call    newline

    lea     mmio_label(%rip), %rsi
    call    puts
    mov     $0xd0100000, %eax           /* in the MMIO hole, past every virtio slot */
    mov     (%rax), %edi
    call    puthex
    call    newline

    mov     $BOOT_MARKER, %eax
    movb    $123, (%rax)                /* Firecracker's boot-timer value */

    lea     end_reset(%rip), %rsi
    call    cmdline_has
    jnz     reset
    lea     end_poweroff(%rip), %rsi
    call    cmdline_has
    jnz     poweroff
    lea     end_fault(%rip), %rsi
    call    cmdline_has
    jnz     fault
    lea     end_halt(%rip), %rsi
    call    cmdline_has
    jnz     halt
    lea     bye(%rip), %rsi
    call    puts
    mov     $21, %eax
    pop     %rbx
    ret

reset:
    lea     resetting(%rip), %rsi
    call    puts
    mov     $0xfe, %al
    outb    %al, $I8042_COMMAND
3:  hlt
    jmp     3b

poweroff:
    lea     powering_off(%rip), %rsi
    call    puts
    mov     $PM1A_CONTROL, %dx
    mov     $(5 << 10 | 1 << 13), %ax
    outw    %ax, %dx
4:  hlt
    jmp     4b

fault:
    lea     faulting(%rip), %rsi
    call    puts
    ud2

halt:
    lea     halted(%rip), %rsi
    call    puts
5:  cli
    hlt
    jmp     5b

    .data
signature:      .zero 16

    .section .rodata
hypervisor_label: .asciz "hypervisor: "
hello:          .asciz "hello from an x86-64 guest\n"
cmdline_label:  .asciz "cmdline: "
e820_label:     .asciz "e820: "
port_label:     .asciz "port 0x2f0: "
mmio_label:     .asciz "mmio 0xd0100000: "
end_reset:      .asciz "end=reset"
end_poweroff:   .asciz "end=poweroff"
end_fault:      .asciz "end=fault"
end_halt:       .asciz "end=halt"
halted:         .asciz "halted\n"
bye:            .asciz "exit code 21\n"
resetting:      .asciz "i8042 reset\n"
powering_off:   .asciz "acpi poweroff\n"
faulting:       .asciz "triple fault\n"
