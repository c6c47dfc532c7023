/* diskbench: block-device throughput from inside a guest, for Benchmarks/disk-riscv64.
 *
 *   diskbench DEVICE MIB
 *
 * Works on the first MIB MiB of DEVICE with O_DIRECT (the guest's page cache out of the way,
 * as fio's direct=1): sequential write and read in 1 MiB requests, then 4 KiB random writes
 * and reads at 4 KiB-aligned offsets (a fixed pseudo-random sequence, so every run and every
 * emulator sees the same one), each phase bounded by a request count and by about 3 s.
 * Writes end with fdatasync, counted in the phase. Prints one line:
 *   DISKBENCH seq_write_mibps=.. seq_read_mibps=.. rand_write_iops=.. rand_read_iops=..
 * Guest clock times (CLOCK_MONOTONIC). Built static by scripts/guests for each guest. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) { /* xorshift64 */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Sequential pass over `bytes` in 1 MiB requests; returns MiB/s. */
static double sequential(int fd, char *buf, uint64_t bytes, int write_pass) {
    const size_t chunk = 1 << 20;
    double start = now();
    for (uint64_t off = 0; off < bytes; off += chunk) {
        ssize_t n = write_pass ? pwrite(fd, buf, chunk, off) : pread(fd, buf, chunk, off);
        if (n != (ssize_t)chunk) die(write_pass ? "pwrite" : "pread");
    }
    if (write_pass && fdatasync(fd) != 0) die("fdatasync");
    return (bytes / (double)chunk) / (now() - start);
}

/* 4 KiB requests at random aligned offsets below `bytes`, at most `ops` or ~3 s; IOPS. */
static double random_io(int fd, char *buf, uint64_t bytes, int ops, int write_pass) {
    const size_t block = 4096;
    uint64_t blocks = bytes / block;
    double start = now(), end = start;
    int done = 0;
    while (done < ops) {
        uint64_t off = (next_random() % blocks) * block;
        ssize_t n = write_pass ? pwrite(fd, buf, block, off) : pread(fd, buf, block, off);
        if (n != (ssize_t)block) die(write_pass ? "pwrite" : "pread");
        done++;
        if ((done & 63) == 0 && (end = now()) - start > 3.0) break;
    }
    if (write_pass && fdatasync(fd) != 0) die("fdatasync");
    end = now();
    return done / (end - start);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: diskbench DEVICE MIB\n");
        return 2;
    }
    uint64_t bytes = strtoull(argv[2], NULL, 10) << 20;
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0) die(argv[1]);
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 1 << 20) != 0) die("posix_memalign");
    for (int i = 0; i < (1 << 20); i++) buf[i] = (char)(i * 7 + 1);  /* not zeroes: no shortcut */
    double sw = sequential(fd, buf, bytes, 1);
    double sr = sequential(fd, buf, bytes, 0);
    double rw = random_io(fd, buf, bytes, 20000, 1);
    double rr = random_io(fd, buf, bytes, 20000, 0);
    printf("DISKBENCH seq_write_mibps=%.1f seq_read_mibps=%.1f rand_write_iops=%.0f rand_read_iops=%.0f\n", sw, sr, rw, rr);
    close(fd);
    return 0;
}
