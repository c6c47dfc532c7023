/* The bare-metal CPU suite (Benchmarks/cpu-riscv64): five kernels, one per build, selected by
   -DKERNEL=<n>, each a different kind of work for a translator:
     1 sha256    SHA-256 over a 16 KiB buffer: 32-bit rotates and adds with two dozen live
                 values (register pressure; what Linux's module signature check runs);
     2 memory    copying, filling and summing a 1 MiB buffer with loads and stores of every
                 width (memory-bound: the software TLB's hit path);
     3 branchy   a binary search tree and a small byte-code interpreter (data-dependent
                 branches, indirect jumps through a switch, calls and returns);
     4 float     double-precision n-body steps and a matrix product (the F and D extensions:
                 fadd, fmul, fdiv, fsqrt, fmadd, conversions and compares);
     5 mixed     a CoreMark-like mix written for this suite: linked-list search and
                 reversal, a 16-bit matrix product, a state machine over text, a CRC-16.
   Each prints "cpusuite <name> checksum <hex> instret <hex>" on the UART (the checksum must
   be the same on every emulator) and exits through the SiFive test device (start.S). */
#include <stdint.h>

#define UART0 ((volatile uint8_t *)0x10000000)

static void putc_uart(char c) {
    while ((UART0[5] & 0x20) == 0) {}
    UART0[0] = (uint8_t)c;
}

static void puts_uart(const char *s) {
    while (*s) putc_uart(*s++);
}

static void puthex(uint64_t v) {
    for (int i = 60; i >= 0; i -= 4) putc_uart("0123456789abcdef"[(v >> i) & 15]);
}

/* Compilers call it for large initializers, freestanding or not. */
void *memset(void *p, int c, unsigned long n) {
    uint8_t *b = p;
    while (n--) *b++ = (uint8_t)c;
    return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#if KERNEL == 1
#define NAME "sha256"
static const uint32_t k256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* One 64-byte block, the rounds fully unrolled by the compiler as in Linux's sha256. */
static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
#pragma GCC unroll 64
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + k256[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static uint8_t data[16384];

static uint64_t run(void) {
    for (unsigned i = 0; i < sizeof data; i++) data[i] = (uint8_t)rng();
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    for (int pass = 0; pass < 200; pass++)
        for (unsigned off = 0; off < sizeof data; off += 64) sha256_block(h, data + off);
    return (uint64_t)h[0] << 32 ^ h[1] ^ (uint64_t)h[7] << 16;
}

#elif KERNEL == 2
#define NAME "memory"
#define WORDS (1 << 17) /* 1 MiB of 64-bit words */
static uint64_t src[WORDS], dst[WORDS];

static uint64_t run(void) {
    uint64_t sum = 0;
    for (unsigned i = 0; i < WORDS; i++) src[i] = rng();
    for (int pass = 0; pass < 12; pass++) {
        for (unsigned i = 0; i < WORDS; i++) dst[i] = src[i] + pass;            /* copy, 64-bit */
        uint32_t *d32 = (uint32_t *)dst;
        for (unsigned i = 0; i < 2 * WORDS; i += 2) d32[i] ^= (uint32_t)i;        /* 32-bit RMW */
        uint8_t *d8 = (uint8_t *)dst;
        for (unsigned i = pass; i < 8 * WORDS; i += 61) d8[i] = (uint8_t)(d8[i] + 1); /* bytes, strided */
        uint16_t *s16 = (uint16_t *)dst;
        for (unsigned i = 0; i < 4 * WORDS; i += 3) sum += s16[i];              /* 16-bit loads */
        for (unsigned i = 0; i < WORDS; i += 8) sum ^= dst[(i * 2654435761u) & (WORDS - 1)]; /* scattered */
    }
    return sum;
}

#elif KERNEL == 3
#define NAME "branchy"
#define NODES 4096
struct node { uint32_t key; int32_t left, right; };
static struct node tree[NODES];
static int nodes;

static void insert(uint32_t key) {
    if (nodes == 0) { tree[nodes++] = (struct node){key, -1, -1}; return; }
    int n = 0;
    for (;;) {
        int32_t *next = key < tree[n].key ? &tree[n].left : &tree[n].right;
        if (*next < 0) { *next = nodes; tree[nodes++] = (struct node){key, -1, -1}; return; }
        n = *next;
    }
}

static int find(uint32_t key) {
    int n = 0, depth = 0;
    while (n >= 0) {
        if (tree[n].key == key) return depth;
        n = key < tree[n].key ? tree[n].left : tree[n].right;
        depth++;
    }
    return -depth;
}

/* A stack machine: the program is random byte code, run with a bounded step count. */
static uint64_t interpret(const uint8_t *code, int length, int steps) {
    uint64_t stack[64] = {0};
    int sp = 0, pc = 0;
    uint64_t acc = 1;
    while (steps-- > 0) {
        uint8_t op = code[pc];
        pc = (pc + 1) % length;
        switch (op & 15) {
        case 0: stack[sp++ & 63] = acc; break;
        case 1: acc = stack[--sp & 63]; break;
        case 2: acc += op; break;
        case 3: acc ^= acc >> 7; break;
        case 4: acc *= 3; break;
        case 5: if (acc & 1) pc = (pc + op) % length; break;
        case 6: acc = acc << 1 | acc >> 63; break;
        case 7: acc -= stack[sp & 63]; break;
        case 8: if ((acc & 6) == 2) pc = (pc + length - 3) % length; break;
        case 9: acc |= (uint64_t)op << 20; break;
        case 10: acc &= ~(uint64_t)op; break;
        case 11: stack[(sp + op) & 63] ^= acc; break;
        case 12: acc += stack[(sp - 1) & 63]; break;
        case 13: acc = acc * 0x9e3779b9u + 1; break;
        case 14: if (acc > stack[sp & 63]) acc >>= 1; break;
        default: acc = ~acc; break;
        }
    }
    return acc ^ (uint64_t)sp;
}

static uint8_t code[1024];

static uint64_t run(void) {
    uint64_t sum = 0;
    for (int round = 0; round < 12; round++) {
        nodes = 0;
        for (int i = 0; i < NODES; i++) insert((uint32_t)rng());
        uint64_t saved = rng_state;
        for (int i = 0; i < 4 * NODES; i++) sum += (uint64_t)find((uint32_t)rng());
        rng_state = saved;
        for (int i = 0; i < NODES; i++) sum += (uint64_t)find((uint32_t)rng());
        for (unsigned i = 0; i < sizeof code; i++) code[i] = (uint8_t)rng();
        sum ^= interpret(code, sizeof code, 200000);
    }
    return sum;
}

#elif KERNEL == 4
#define NAME "float"
#define BODIES 5
#define N 48
struct body { double x, y, z, vx, vy, vz, mass; };
static struct body bodies[BODIES];
static double ma[N][N], mb[N][N], mc[N][N];

static double frac(void) { return (double)(rng() >> 11) / 9007199254740992.0; }

static uint64_t run(void) {
    /* F and D need mstatus.FS on (-bios none starts with it off). */
    __asm__ volatile("li t0, 0x2000\n csrs mstatus, t0" ::: "t0");
    for (int i = 0; i < BODIES; i++)
        bodies[i] = (struct body){frac() * 10, frac() * 10, frac() * 10, frac(), frac(), frac(), 1 + frac()};
    for (int step = 0; step < 60000; step++) {
        for (int i = 0; i < BODIES; i++) {
            for (int j = i + 1; j < BODIES; j++) {
                double dx = bodies[i].x - bodies[j].x, dy = bodies[i].y - bodies[j].y, dz = bodies[i].z - bodies[j].z;
                double d2 = dx * dx + dy * dy + dz * dz + 0.01;
                double mag = 0.001 / (d2 * __builtin_sqrt(d2));
                bodies[i].vx -= dx * bodies[j].mass * mag; bodies[i].vy -= dy * bodies[j].mass * mag;
                bodies[i].vz -= dz * bodies[j].mass * mag;
                bodies[j].vx += dx * bodies[i].mass * mag; bodies[j].vy += dy * bodies[i].mass * mag;
                bodies[j].vz += dz * bodies[i].mass * mag;
            }
        }
        for (int i = 0; i < BODIES; i++) {
            bodies[i].x += 0.001 * bodies[i].vx; bodies[i].y += 0.001 * bodies[i].vy; bodies[i].z += 0.001 * bodies[i].vz;
        }
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) { ma[i][j] = frac() - 0.5; mb[i][j] = frac() - 0.5; }
    for (int rep = 0; rep < 8; rep++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < N; k++) s += ma[i][k] * mb[k][j];
                mc[i][j] = s + (float)rep;
            }
    uint64_t sum = 0;
    for (int i = 0; i < BODIES; i++) sum += (uint64_t)(int64_t)(bodies[i].x * 1e6) ^ (uint64_t)(int64_t)(bodies[i].vy * 1e9);
    for (int i = 0; i < N; i++) sum += (uint64_t)(int64_t)(mc[i][(i * 7) % N] * 1e9) + (mc[i][i] < 0);
    return sum;
}

#elif KERNEL == 5
#define NAME "mixed"
#define ITEMS 256
#define M 24
struct item { struct item *next; int16_t value; uint16_t index; };
static struct item items[ITEMS];
static int16_t m1[M][M], m2[M][M];
static int32_t m3[M][M];
static char text[512];

static struct item *reverse(struct item *list) {
    struct item *previous = 0;
    while (list) { struct item *next = list->next; list->next = previous; previous = list; list = next; }
    return previous;
}

static uint16_t crc16(uint16_t crc, uint8_t byte) {
    for (int i = 0; i < 8; i++) {
        int carry = (crc ^ byte) & 1;
        crc >>= 1; byte >>= 1;
        if (carry) crc ^= 0xa001;
    }
    return crc;
}

/* Classifies the text's words: numbers, hexadecimal numbers, identifiers, other. */
static uint32_t scan(const char *s) {
    enum { START, NUMBER, HEX, WORD, OTHER } state = START;
    uint32_t counts[5] = {0};
    for (; *s; s++) {
        char c = *s;
        if (c == ' ') { counts[state]++; state = START; continue; }
        switch (state) {
        case START: state = c >= '0' && c <= '9' ? (c == '0' ? HEX : NUMBER) : (c >= 'a' && c <= 'z') ? WORD : OTHER; break;
        case NUMBER: if (c < '0' || c > '9') state = OTHER; break;
        case HEX: if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == 'x')) state = OTHER; break;
        case WORD: if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) state = OTHER; break;
        default: break;
        }
    }
    return counts[1] | counts[2] << 8 | counts[3] << 16 | counts[4] << 24;
}

static uint64_t run(void) {
    static const char alphabet[] = "0123456789abcdefx ghz_+ ";
    uint64_t sum = 0;
    uint16_t crc = 0;
    for (int i = 0; i < ITEMS; i++) items[i] = (struct item){i + 1 < ITEMS ? &items[i + 1] : 0, (int16_t)rng(), (uint16_t)i};
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) { m1[i][j] = (int16_t)(rng() & 0xff); m2[i][j] = (int16_t)(rng() & 0xff); }
    struct item *list = items;
    for (int round = 0; round < 6000; round++) {
        int16_t wanted = items[(round * 37) % ITEMS].value;
        for (struct item *p = list; p; p = p->next)
            if (p->value == wanted) { sum += p->index; break; }
        list = reverse(list);
        if (round % 8 == 0) {
            for (int i = 0; i < M; i++)
                for (int j = 0; j < M; j++) {
                    int32_t s = 0;
                    for (int k = 0; k < M; k++) s += (int32_t)m1[i][k] * m2[k][j];
                    m3[i][j] = s;
                }
            m1[round % M][(round / M) % M] ^= (int16_t)m3[round % M][0];
        }
        for (unsigned i = 0; i + 1 < sizeof text; i++) text[i] = alphabet[rng() % (sizeof alphabet - 1)];
        sum += scan(text);
        for (int i = 0; i < 64; i++) crc = crc16(crc, (uint8_t)text[i]);
    }
    return sum ^ (uint64_t)crc << 48 ^ (uint64_t)m3[1][2];
}
#else
#error "build with -DKERNEL=1..5"
#endif

int main(void) {
    uint64_t start, end;
    __asm__ volatile("csrr %0, minstret" : "=r"(start));
    uint64_t checksum = run();
    __asm__ volatile("csrr %0, minstret" : "=r"(end));
    puts_uart("cpusuite " NAME " checksum ");
    puthex(checksum);
    puts_uart(" instret ");
    puthex(end - start);
    puts_uart("\n");
    return 0;
}
