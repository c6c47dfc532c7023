// CLinux: the only hand-written C in swemu (DESIGN.md §2, §9.2).
// It exposes kernel interfaces Swift cannot import directly: variadic calls (ioctl, fcntl),
// macros that are not simple constants, and small helpers. Every symbol is prefixed clx_.
#ifndef SWEMU_CLINUX_H
#define SWEMU_CLINUX_H

// No _GNU_SOURCE here: it changes glibc's struct definitions (fd_set) and makes them clash
// with Swift's Glibc module. GNU-only calls are wrapped in shim.c, which defines it.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <linux/kvm.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <termios.h>
#include <unistd.h>

/// ioctl(2) with a pointer argument (ioctl is variadic, which Swift cannot call).
int clx_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(2) with an integer argument.
int clx_ioctl_int(int fd, unsigned long request, unsigned long arg);
/// fcntl(2) F_GETFL/F_SETFL helpers.
int clx_fcntl_getfl(int fd);
int clx_fcntl_setfl(int fd, int flags);
int clx_set_cloexec(int fd);

/// Names the calling thread (pthread_setname_np is GNU-only); Linux keeps 15 bytes.
int clx_set_thread_name(const char *name);

/// The kernel's id of the calling thread (gettid(2), GNU-only in glibc's headers).
int clx_gettid(void);

/// Terminal window size (TIOCGWINSZ), for the console multiplexer's help text.
int clx_get_winsize(int fd, unsigned short *rows, unsigned short *cols);
// Whether this x86-64 CPU has FMA3 and the kernel saves AVX state (CPUID.1:ECX FMA, AVX and
// OSXSAVE, XCR0 bits 1-2): the JIT then translates RISC-V's fused multiply-adds natively.
int clx_cpu_has_fma(void);
// Whether this x86-64 CPU has POPCNT, TZCNT (BMI1) and LZCNT (CPUID.1:ECX.23, CPUID.7:EBX.3,
// CPUID.80000001h:ECX.5): the JIT then translates Zbb's clz, ctz and cpop natively.
int clx_cpu_has_bit_counts(void);

/// Opens a pseudo-terminal master (posix_openpt + grantpt + unlockpt), non-blocking and
/// close-on-exec, and writes the slave's path into `name` (NUL-terminated).
int clx_open_pty(char *name, size_t name_len);

/// Sets the pty master's slave side to raw mode so a guest console sees bytes unchanged.
int clx_pty_make_raw(int master_fd);

/// Puts terminal `fd` into QEMU's stdio raw mode (no echo, line editing or input translation;
/// output processing kept), first saving its settings for clx_term_restore and the handlers
/// below. `allow_signals` keeps ISIG, so Ctrl-C still raises SIGINT. 0, or -1 with errno.
int clx_term_enter_raw(int fd, int allow_signals);
/// Restores and forgets the settings saved for `fd` (-1: every saved terminal).
int clx_term_restore(int fd);
/// Once per process: restore saved terminals at exit and on SIGINT/SIGTERM/SIGHUP/SIGQUIT and
/// the crash signals (then the previous action, or death by the same signal); SIGCONT goes raw
/// again after a Ctrl-Z. Signals the process ignores stay ignored.
int clx_term_install_handlers(void);

/// QEMU's termination signals (os_setup_signal_handling): SIGINT, SIGTERM and SIGHUP record
/// the signal and the sender's pid and write 1 to `event_fd` (an eventfd), so a thread reads
/// them and ends the machine in order; unblocks them for the calling thread (call it before
/// any thread starts). Install before clx_term_install_handlers, which then passes these
/// signals on here. 0, or -1 with errno.
int clx_shutdown_signals_install(int event_fd);
/// The last termination signal recorded (0: none) and its sender's pid (0: the kernel, e.g.
/// Ctrl-C at the terminal).
int clx_shutdown_signal_take(int *pid);

/// -sandbox: SIGSYS from the seccomp filter (SECCOMP_RET_TRAP: a call outside its allowlist)
/// writes "<prefix>sandbox: system call NAME (N) is not allowed ..." to stderr, restores the
/// terminal and ends the process by SIGSYS. `names[n]` is call n's name (NULL: unknown); the
/// strings must live as long as the process. 0, or -1 with errno.
int clx_sandbox_trap_install(const char *prefix, const char *const *names, int count);

/// O_PATH and O_TMPFILE, which need _GNU_SOURCE (see above); defined in shim.c.
extern const int clx_O_PATH;
extern const int clx_O_TMPFILE;

static const unsigned long clx_TIOCGWINSZ = TIOCGWINSZ;
static const unsigned long clx_FIONREAD = FIONREAD;
static const int clx_EPOLLIN = EPOLLIN;
static const int clx_EPOLLOUT = EPOLLOUT;
static const int clx_EPOLLERR = EPOLLERR;
static const int clx_EPOLLHUP = EPOLLHUP;
static const int clx_EPOLLRDHUP = EPOLLRDHUP;

/// MAP_FAILED is a pointer-valued macro Swift cannot import.
static inline int clx_is_map_failed(void *p) { return p == MAP_FAILED; }
/// memfd_create(2) with MFD_CLOEXEC: anonymous memory with a file descriptor, so it can be
/// mapped twice (the JIT's code buffer: once writable, once executable, never both).
int clx_memfd_create(const char *name);
/// memfd_create(2) with MFD_CLOEXEC | MFD_ALLOW_SEALING: guest RAM, whose size can then be
/// sealed (QEMU's memory-backend-memfd seal=on).
int clx_memfd_create_sealable(const char *name);
/// fcntl(F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK): the memfd's size can no longer change.
int clx_memfd_seal_size(int fd);
/// madvise(MADV_POPULATE_WRITE) (Linux 5.14): every page of [p, p + n) allocated and writable
/// now, not at the first touch (memory backends' prealloc=on); -1 with errno, EINVAL where the
/// kernel lacks it.
int clx_madvise_populate_write(void *p, size_t n);
/// recvmsg(2) of up to `len` bytes and up to `max_fds` descriptors sent with them
/// (SCM_RIGHTS, received close-on-exec; any beyond `max_fds` are closed). Returns what
/// recvmsg returns; `*nfds` is how many descriptors landed in `fds`.
long clx_recv_with_fds(int fd, void *buf, size_t len, int *fds, int max_fds, int *nfds);


// Atomic operations on guest RAM, which is plain host memory shared by vCPU threads and DMA.
// Swift's Atomic needs a value it owns; guest memory is raw, so these wrap the compiler
// builtins. Sequentially consistent: RISC-V AMOs with aq+rl need it, weaker ones are allowed
// to be stronger. `p` must be naturally aligned (the callers trap misaligned atomics first).
static inline uint32_t clx_atomic_load_u32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_SEQ_CST); }
static inline uint64_t clx_atomic_load_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_SEQ_CST); }
/// Compare-and-exchange; returns the value that was in memory (== expected on success).
static inline uint32_t clx_atomic_cas_u32(void *p, uint32_t expected, uint32_t desired) {
    __atomic_compare_exchange_n((uint32_t *)p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
static inline void clx_atomic_store_u64(void *p, uint64_t value) { __atomic_store_n((uint64_t *)p, value, __ATOMIC_SEQ_CST); }
static inline uint64_t clx_atomic_fetch_or_u64(void *p, uint64_t bits) { return __atomic_fetch_or((uint64_t *)p, bits, __ATOMIC_SEQ_CST); }
static inline uint64_t clx_atomic_fetch_and_u64(void *p, uint64_t bits) { return __atomic_fetch_and((uint64_t *)p, bits, __ATOMIC_SEQ_CST); }
static inline uint32_t clx_atomic_fetch_add_u32(void *p, uint32_t value) { return __atomic_fetch_add((uint32_t *)p, value, __ATOMIC_SEQ_CST); }
static inline uint64_t clx_atomic_cas_u64(void *p, uint64_t expected, uint64_t desired) {
    __atomic_compare_exchange_n((uint64_t *)p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

// KVM (Documentation/virt/kvm/api.rst). The _IO/_IOR/_IOW request numbers are macros Swift
// cannot import; Tests/KVMTests checks each constant against the kernel headers. Plain integer
// #defines (KVM_EXIT_*, KVM_CAP_*) import as they are.
static const unsigned long clx_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long clx_KVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long clx_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long clx_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long clx_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long clx_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long clx_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long clx_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long clx_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long clx_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long clx_KVM_IRQFD = KVM_IRQFD;
static const unsigned long clx_KVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long clx_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long clx_KVM_RUN = KVM_RUN;
static const unsigned long clx_KVM_GET_REGS = KVM_GET_REGS;
static const unsigned long clx_KVM_SET_REGS = KVM_SET_REGS;
static const unsigned long clx_KVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long clx_KVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long clx_KVM_SET_FPU = KVM_SET_FPU;
static const unsigned long clx_KVM_GET_FPU = KVM_GET_FPU;
static const unsigned long clx_KVM_SET_GUEST_DEBUG = KVM_SET_GUEST_DEBUG;
static const unsigned long clx_KVM_TRANSLATE = KVM_TRANSLATE;
static const unsigned long clx_KVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long clx_KVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long clx_KVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long clx_KVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long clx_KVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long clx_KVM_SET_LAPIC = KVM_SET_LAPIC;
// Saved state (KVMVcpu+State.swift, KVMVirtualMachine+State.swift).
static const unsigned long clx_KVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
static const unsigned long clx_KVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long clx_KVM_GET_CPUID2 = KVM_GET_CPUID2;
static const unsigned long clx_KVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long clx_KVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long clx_KVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long clx_KVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long clx_KVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long clx_KVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long clx_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long clx_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long clx_KVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
static const unsigned long clx_KVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
static const unsigned long clx_KVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long clx_KVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long clx_KVM_GET_PIT2 = KVM_GET_PIT2;
static const unsigned long clx_KVM_SET_PIT2 = KVM_SET_PIT2;
static const unsigned long clx_KVM_GET_CLOCK = KVM_GET_CLOCK;
static const unsigned long clx_KVM_SET_CLOCK = KVM_SET_CLOCK;
// Dirty page logging for live migration (KVMVirtualMachine+DirtyLog.swift).
static const unsigned long clx_KVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const uint32_t clx_KVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;

/// Installs a handler that does nothing for `signal`, without SA_RESTART, and unblocks it in
/// the calling thread, so a vCPU thread blocked in KVM_RUN returns EINTR when another thread
/// kicks it with pthread_kill.
int clx_install_kick_signal(int signal);

#endif
