/* debuggee: a program for the GDB stub tests (Tests/KVMTests/X86GDBTests.swift). It calls
 * `checkpoint` three times, counting in `counter`, then exits with `answer` as its code (5
 * unless a debugger changed it: swemu's status is code * 2 + 1). General-purpose registers
 * only, at CPL0 (see guest.h). With "spin" on the command line it loops instead of exiting. */
#include "guest.h"

    .text
    .globl main
main:
    lea     started(%rip), %rsi
    call    puts
    xor     %ecx, %ecx
1:  call    checkpoint
    incq    counter(%rip)
    inc     %ecx
    cmp     $3, %ecx
    jb      1b
    lea     spin_word(%rip), %rsi
    call    cmdline_has
    jnz     spin
    lea     finished(%rip), %rsi
    call    puts
    mov     answer(%rip), %rax
    ret

/* With "spin" on the command line: loop until a debugger interrupts (Ctrl-C). */
spin:
    incq    counter(%rip)
    jmp     spin

/* checkpoint: a 7-byte first instruction, so a single step lands 7 bytes further. */
    .globl checkpoint
checkpoint:
    mov     $0x1234, %rax
    mov     %rax, scratch(%rip)
    ret

    .section .rodata
started:    .asciz "debuggee started\n"
finished:   .asciz "debuggee finished\n"
spin_word:  .asciz "spin"

    .data
    .balign 8
    .globl counter, answer, scratch
counter:    .quad 0
answer:     .quad 5
scratch:    .quad 0
