/* Runs the integer benchmark of intbench.c as a riscv64 Linux process (Benchmarks/linux-riscv64).
   intbench.c is written for bare metal; built with -DINTBENCH_LINUX its main is intbench_main,
   and it calls the two functions below instead of writing to the UART and reading minstret:
     riscv64-linux-gnu-gcc -O2 -static -DINTBENCH_LINUX \
         -o intbench Benchmarks/riscv/intbench-linux.c Benchmarks/riscv/intbench.c
   Prints the same line as on bare metal ("intbench checksum <hex> instret <hex>"). The
   instruction count comes from the user-level instret counter when the kernel lets a process
   read it (Linux does not by default since 6.6: kernel.perf_user_access), else it is 0; it
   counts the kernel's instructions on this hart as well. */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int intbench_main(void);

void intbench_putc(char c) {
    putchar(c);
}

static sigjmp_buf no_counter;

static void on_sigill(int sig) {
    (void)sig;
    siglongjmp(no_counter, 1);
}

uint64_t intbench_instret(void) {
    static int unavailable;
    uint64_t v = 0;
    if (unavailable) return 0;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigill;
    sigaction(SIGILL, &sa, &old);
    if (sigsetjmp(no_counter, 1) == 0)
        __asm__ volatile("rdinstret %0" : "=r"(v));
    else
        unavailable = 1, v = 0;
    sigaction(SIGILL, &old, NULL);
    return v;
}

int main(void) {
    int rc = intbench_main();
    fflush(stdout);
    return rc;
}
