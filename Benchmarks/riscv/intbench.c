/* An integer CPU benchmark for bare-metal RISC-V: 50 000 iterations of a mix of what
   compiled code does most (calls, branches, loads and stores, multiply/divide, shifts, byte
   handling): a CRC-32, an insertion sort, a small hash table, string copies. Prints its
   checksum and the instructions it retired (minstret) on the UART, so the run can be checked
   and an instructions-per-second figure derived.
   Built with -DINTBENCH_LINUX it is the kernel of a Linux process instead: main becomes
   intbench_main, and Benchmarks/riscv/intbench-linux.c (used by Benchmarks/linux-riscv64)
   provides main, the output and the instruction counter, since minstret and the UART are not a
   process's to use. */
#include <stdint.h>

#define ITERATIONS 50000

#ifdef INTBENCH_LINUX
#define main intbench_main
void intbench_putc(char c);
uint64_t intbench_instret(void);
#define putc_uart intbench_putc
#define READ_INSTRET(v) ((v) = intbench_instret())
#else
#define UART0 ((volatile uint8_t *)0x10000000)
#define READ_INSTRET(v) __asm__ volatile("csrr %0, minstret" : "=r"(v))

static void putc_uart(char c) {
    while ((UART0[5] & 0x20) == 0) {}
    UART0[0] = (uint8_t)c;
}
#endif

static void puts_uart(const char *s) {
    while (*s) putc_uart(*s++);
}

static void puthex(uint64_t v) {
    for (int i = 60; i >= 0; i -= 4) putc_uart("0123456789abcdef"[(v >> i) & 15]);
}

static uint32_t crc32(const uint8_t *p, int n, uint32_t crc) {
    crc = ~crc;
    for (int i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
    }
    return ~crc;
}

static void insertion_sort(int32_t *a, int n) {
    for (int i = 1; i < n; i++) {
        int32_t v = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

static char *copy(char *dst, const char *src) {
    while ((*dst++ = *src++)) {}
    return dst;
}

static uint64_t table[64];

int main(void) {
    uint64_t start = 0, end = 0;
    READ_INSTRET(start);
    uint32_t checksum = 0;
    uint64_t seed = 12345;
    int32_t values[24];
    char buffer[64];
    for (int iter = 0; iter < ITERATIONS; iter++) {
        for (int i = 0; i < 24; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            values[i] = (int32_t)(seed >> 33) % 1000;
        }
        insertion_sort(values, 24);
        checksum = crc32((const uint8_t *)values, sizeof values / 4, checksum);
        uint64_t key = seed ^ (uint64_t)iter;
        table[key % 64] += key / ((uint64_t)iter + 1);
        char *p = copy(buffer, "swemu benchmark ");
        *p++ = (char)('a' + iter % 26);
        *p = 0;
        checksum += crc32((const uint8_t *)buffer, (int)(p - buffer), 0) >> 7;
    }
    for (int i = 0; i < 64; i++) checksum ^= (uint32_t)table[i];
    READ_INSTRET(end);
    puts_uart("intbench checksum ");
    puthex(checksum);
    puts_uart(" instret ");
    puthex(end - start);
    puts_uart("\n");
    return 0;
}
