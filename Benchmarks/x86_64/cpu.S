/* A CPU-bound loop (xorshift64, integer registers only) timed with rdtsc, built twice by
 * Benchmarks/boot-x86_64: as a microvm guest program (-DGUEST, entered like the test programs)
 * and as a native Linux program. Both print "cycles 0x<n> checksum 0x<n>". */
#ifndef ITERATIONS
#define ITERATIONS (1 << 30)
#endif

#ifdef GUEST
#include "guest.h"
#endif

    .text
/* measure: %r10 = TSC cycles spent in the loop, %r9 = its checksum. */
measure:
    rdtsc
    shl     $32, %rdx
    or      %rax, %rdx
    mov     %rdx, %r8
    movabs  $0x9e3779b97f4a7c15, %rax
    mov     $ITERATIONS, %rcx
1:  mov     %rax, %rdx
    shl     $13, %rdx
    xor     %rdx, %rax
    mov     %rax, %rdx
    shr     $7, %rdx
    xor     %rdx, %rax
    mov     %rax, %rdx
    shl     $17, %rdx
    xor     %rdx, %rax
    dec     %rcx
    jnz     1b
    mov     %rax, %r9
    rdtsc
    shl     $32, %rdx
    or      %rax, %rdx
    sub     %r8, %rdx
    mov     %rdx, %r10
    ret

#ifdef GUEST
    .globl main
main:
    call    measure
    lea     cycles_text(%rip), %rsi
    call    puts
    mov     %r10, %rdi
    call    puthex
    lea     checksum_text(%rip), %rsi
    call    puts
    mov     %r9, %rdi
    call    puthex
    call    newline
    xor     %eax, %eax
    ret
    .section .rodata
cycles_text:    .asciz "cycles "
checksum_text:  .asciz " checksum "
#else
    .globl _start
_start:
    call    measure
    mov     %r10, %rax
    lea     line_cycles(%rip), %rdi
    call    hex16
    mov     %r9, %rax
    lea     line_checksum(%rip), %rdi
    call    hex16
    mov     $1, %eax                    /* write(1, line, length) */
    mov     $1, %edi
    lea     line(%rip), %rsi
    mov     $(line_end - line), %edx
    syscall
    mov     $60, %eax                   /* exit(0) */
    xor     %edi, %edi
    syscall

/* hex16: writes %rax as 16 hex digits at %rdi. */
hex16:
    mov     $16, %ecx
1:  rol     $4, %rax
    mov     %eax, %edx
    and     $0xf, %edx
    cmp     $10, %edx
    jb      2f
    add     $('a' - '0' - 10), %edx
2:  add     $'0', %edx
    mov     %dl, (%rdi)
    inc     %rdi
    dec     %ecx
    jnz     1b
    ret

    .data
line:           .ascii "cycles 0x"
line_cycles:    .ascii "0000000000000000 checksum 0x"
line_checksum:  .ascii "0000000000000000\n"
line_end:
#endif
