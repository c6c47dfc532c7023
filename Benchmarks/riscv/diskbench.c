// Disk throughput from inside a Linux guest (Benchmarks/disk-io-riscv64): sequential 1 MiB
// and random 4 KiB reads and writes with O_DIRECT on a block device, so the guest's page
// cache does not hide the emulator's virtio-blk and image format. Prints KEY=VALUE lines.
//   diskbench DEVICE [MiB]
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t state = 88172645463325252ull;
static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long mib = argc > 2 ? atol(argv[2]) : 64;
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0) { perror("open"); return 1; }
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 1 << 20)) return 1;
    for (int i = 0; i < 1 << 20; i++) buf[i] = (char)next();
    off_t total = (off_t)mib << 20;
    double t = now();
    for (off_t o = 0; o < total; o += 1 << 20)
        if (pwrite(fd, buf, 1 << 20, o) != 1 << 20) { perror("pwrite"); return 1; }
    fsync(fd);
    printf("SEQ_WRITE_MBS=%.1f\n", mib / (now() - t));
    t = now();
    for (off_t o = 0; o < total; o += 1 << 20)
        if (pread(fd, buf, 1 << 20, o) != 1 << 20) { perror("pread"); return 1; }
    printf("SEQ_READ_MBS=%.1f\n", mib / (now() - t));
    int n = 2000;
    t = now();
    for (int i = 0; i < n; i++)
        if (pwrite(fd, buf, 4096, (off_t)(next() % (total / 4096)) * 4096) != 4096) { perror("pwrite"); return 1; }
    fsync(fd);
    printf("RAND_WRITE_IOPS=%.0f\n", n / (now() - t));
    t = now();
    for (int i = 0; i < n; i++)
        if (pread(fd, buf, 4096, (off_t)(next() % (total / 4096)) * 4096) != 4096) { perror("pread"); return 1; }
    printf("RAND_READ_IOPS=%.0f\n", n / (now() - t));
    return 0;
}
