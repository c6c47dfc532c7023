/* Runtime of the x86-64 guest programs (Tests/KVMTests). swemu's microvm enters an ELF64 the way
 * Linux's 64-bit boot protocol enters a kernel (Documentation/arch/x86/boot.rst): long mode,
 * low 4 GiB identity-mapped, GDT with code at 0x10 and data at 0x18, RSI = the zero page.
 * Only general-purpose registers at CPL0: KVM on PVM hosts emulates guest kernel mode and
 * fails on SSE there (the project's field notes on PVM).
 *
 * A program defines `main` (called with the zero page in %rdi); returning from it exits through
 * the exit port with %al as the code (swemu's status is then code * 2 + 1). */

#define COM1            0x3f8
#define COM1_LSR        (COM1 + 5)
#define LSR_THRE        0x20
#define DEBUG_EXIT      0x501
#define I8042_COMMAND   0x64
#define PM1A_CONTROL    0x604
#define BOOT_MARKER     0xc0000000
#define VIRTIO_MMIO     0xd0000000
#define LAPIC           0xfee00000

/* struct boot_params offsets (Documentation/arch/x86/zero-page.rst) */
#define BP_E820_ENTRIES 0x1e8
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE   0x2d0

    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    cli
    mov     %rsi, zero_page(%rip)
    mov     $0x80000, %rsp          /* below the 1 MiB image, above swemu's boot data */
    mov     %rsi, %rdi
    call    main
    jmp     exit_with

    .text
/* exit_with: %al = code; the exit port ends the run. */
    .globl exit_with
exit_with:
    mov     $DEBUG_EXIT, %dx
    outb    %al, %dx
1:  hlt
    jmp     1b

/* putc: %dil = character. Waits for the transmitter holding register to be empty. */
putc:
    push    %rax
    push    %rdx
    mov     $COM1_LSR, %dx
1:  inb     %dx, %al
    test    $LSR_THRE, %al
    jz      1b
    mov     $COM1, %dx
    mov     %dil, %al
    outb    %al, %dx
    pop     %rdx
    pop     %rax
    ret

/* puts: %rsi = NUL-terminated string. */
puts:
    push    %rsi
    push    %rdi
1:  movzbl  (%rsi), %edi
    test    %dil, %dil
    jz      2f
    call    putc
    inc     %rsi
    jmp     1b
2:  pop     %rdi
    pop     %rsi
    ret

/* puthex: %rdi = value, printed as 0x followed by 16 hex digits... without leading zeros. */
puthex:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rdi
    mov     %rdi, %rdx
    mov     $'0', %edi
    call    putc
    mov     $'x', %edi
    call    putc
    mov     $60, %ecx
    xor     %eax, %eax              /* nonzero once a digit was printed */
1:  mov     %rdx, %rdi
    shr     %cl, %rdi
    and     $0xf, %edi
    test    %ecx, %ecx
    jz      2f                      /* always print the last digit */
    test    %edi, %edi
    jnz     2f
    test    %eax, %eax
    jz      3f
2:  mov     $1, %eax
    cmp     $10, %edi
    jb      4f
    add     $('a' - '0' - 10), %edi
4:  add     $'0', %edi
    call    putc
3:  sub     $4, %ecx
    jns     1b
    pop     %rdi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret

/* newline */
newline:
    push    %rdi
    mov     $'\n', %edi
    call    putc
    pop     %rdi
    ret

/* apic_id: %eax = this CPU's initial APIC id (CPUID.1:EBX[31:24], which swemu sets per vCPU). */
apic_id:
    push    %rbx
    push    %rcx
    push    %rdx
    mov     $1, %eax
    cpuid
    mov     %ebx, %eax
    shr     $24, %eax
    pop     %rdx
    pop     %rcx
    pop     %rbx
    ret

/* cmdline_has: %rsi = NUL-terminated word; ZF clear (and %eax = 1) when the kernel command line
 * contains it, %eax = 0 otherwise. */
cmdline_has:
    push    %rbx
    push    %rcx
    push    %rdx
    mov     zero_page(%rip), %rbx
    mov     BP_CMD_LINE_PTR(%rbx), %ebx     /* 32-bit physical address */
1:  xor     %ecx, %ecx
2:  movzbl  (%rsi,%rcx), %edx
    test    %dl, %dl
    jz      4f                               /* the whole word matched */
    cmp     (%rbx,%rcx), %dl
    jne     3f
    inc     %rcx
    jmp     2b
3:  cmpb    $0, (%rbx)
    je      5f
    inc     %rbx
    jmp     1b
4:  mov     $1, %eax
    jmp     6f
5:  xor     %eax, %eax
6:  test    %eax, %eax
    pop     %rdx
    pop     %rcx
    pop     %rbx
    ret

    .data
    .balign 8
zero_page: .quad 0
