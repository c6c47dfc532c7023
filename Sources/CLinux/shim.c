// Implementations of CLinux.h. Keep this file small: every line here is unchecked by Swift.
#define _GNU_SOURCE 1
#include "CLinux.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

int clx_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int clx_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
int clx_memfd_create_sealable(const char *name) { return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); }
int clx_memfd_seal_size(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK); }
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
int clx_madvise_populate_write(void *p, size_t n) { return madvise(p, n, MADV_POPULATE_WRITE); }

long clx_recv_with_fds(int fd, void *buf, size_t len, int *fds, int max_fds, int *nfds) {
    char control[CMSG_SPACE(sizeof(int) * 16)];
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control) };
    *nfds = 0;
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *received = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < max_fds) fds[(*nfds)++] = received[i];
            else close(received[i]);
        }
    }
    return n;
}
int clx_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
int clx_fcntl_getfl(int fd) { return fcntl(fd, F_GETFL); }
int clx_fcntl_setfl(int fd, int flags) { return fcntl(fd, F_SETFL, flags); }
int clx_set_cloexec(int fd) {
    int f = fcntl(fd, F_GETFD);
    if (f < 0) return -1;
    return fcntl(fd, F_SETFD, f | FD_CLOEXEC);
}

int clx_get_winsize(int fd, unsigned short *rows, unsigned short *cols) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) < 0) return -1;
    *rows = ws.ws_row;
    *cols = ws.ws_col;
    return 0;
}

int clx_open_pty(char *name, size_t name_len) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) < 0 || unlockpt(fd) < 0 || ptsname_r(fd, name, name_len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int clx_pty_make_raw(int master_fd) {
    // termios of the pair are shared; setting them on the master configures the line discipline.
    struct termios t;
    if (tcgetattr(master_fd, &t) < 0) return -1;
    cfmakeraw(&t);
    return tcsetattr(master_fd, TCSANOW, &t);
}

int clx_set_thread_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    return pthread_setname_np(pthread_self(), short_name);
}

// ---- Terminal raw mode for the stdio chardev, restored on every way out ---------------------
// QEMU's char-stdio raw mode: no input translation, echo or line editing; output processing
// (OPOST) stays as the user had it, so a guest's "\r\n" shows unchanged.
// The saved settings live in C because a signal handler must restore them: it may only touch
// plain memory and call async-signal-safe functions (tcsetattr, sigaction, raise).
// Callers (StdioBackend) serialise clx_term_enter_raw/clx_term_restore with a lock; the
// handlers read a slot only after `used` is published with release/acquire ordering.

#define CLX_TERM_SLOTS 4
struct clx_term_slot {
    int used;
    int fd;
    struct termios saved;
    struct termios raw;
};
static struct clx_term_slot clx_term_slots[CLX_TERM_SLOTS];
static struct sigaction clx_term_old_actions[NSIG];
static int clx_term_handlers_installed;

static void clx_term_restore_all_signal_safe(void) {
    for (int i = 0; i < CLX_TERM_SLOTS; i++) {
        if (__atomic_load_n(&clx_term_slots[i].used, __ATOMIC_ACQUIRE))
            tcsetattr(clx_term_slots[i].fd, TCSANOW, &clx_term_slots[i].saved);
    }
}

int clx_term_enter_raw(int fd, int allow_signals) {
    struct clx_term_slot *slot = NULL;
    for (int i = 0; i < CLX_TERM_SLOTS; i++) {
        if (clx_term_slots[i].used && clx_term_slots[i].fd == fd) { slot = &clx_term_slots[i]; break; }
    }
    struct termios saved;
    if (slot) saved = slot->saved;                 // already raw: keep the user's original settings
    else if (tcgetattr(fd, &saved) < 0) return -1;
    struct termios raw = saved;
    raw.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_oflag |= OPOST;
    raw.c_lflag &= ~(ECHO | ECHONL | ICANON | IEXTEN);
    if (!allow_signals) raw.c_lflag &= ~ISIG;
    raw.c_cflag &= ~(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (!slot) {
        for (int i = 0; i < CLX_TERM_SLOTS; i++) {
            if (!clx_term_slots[i].used) { slot = &clx_term_slots[i]; break; }
        }
        if (!slot) { errno = ENFILE; return -1; }
        slot->fd = fd;
        slot->saved = saved;
    }
    slot->raw = raw;
    __atomic_store_n(&slot->used, 1, __ATOMIC_RELEASE);
    return tcsetattr(fd, TCSANOW, &raw);
}

int clx_term_restore(int fd) {
    int rc = 0;
    for (int i = 0; i < CLX_TERM_SLOTS; i++) {
        struct clx_term_slot *slot = &clx_term_slots[i];
        if (!slot->used || (fd >= 0 && slot->fd != fd)) continue;
        if (tcsetattr(slot->fd, TCSANOW, &slot->saved) < 0) rc = -1;
        __atomic_store_n(&slot->used, 0, __ATOMIC_RELEASE);
    }
    return rc;
}

static void clx_term_at_exit(void) { clx_term_restore(-1); }

static void clx_term_on_signal(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    struct sigaction *old = &clx_term_old_actions[sig];
    int has_handler = (old->sa_flags & SA_SIGINFO) ? old->sa_sigaction != NULL
                    : (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN);
    if (sig == SIGCONT) {
        // Back from Ctrl-Z: the shell put its own settings back; go raw again.
        for (int i = 0; i < CLX_TERM_SLOTS; i++) {
            if (__atomic_load_n(&clx_term_slots[i].used, __ATOMIC_ACQUIRE))
                tcsetattr(clx_term_slots[i].fd, TCSANOW, &clx_term_slots[i].raw);
        }
    } else if (!(has_handler && (sig == SIGINT || sig == SIGTERM || sig == SIGHUP))) {
        // A termination signal someone else handles is their orderly shutdown (atexit
        // restores); anything else ends the process, so restore now.
        clx_term_restore_all_signal_safe();
    }
    if (has_handler) {
        if (old->sa_flags & SA_SIGINFO) old->sa_sigaction(sig, info, context);
        else old->sa_handler(sig);
    } else if (sig != SIGCONT) {
        // Die of the same signal, as the default action would have: blocked while this handler
        // runs, it is delivered on return (a faulting instruction re-faults the same way).
        signal(sig, SIG_DFL);
        raise(sig);
    }
    errno = saved_errno;
}

int clx_term_install_handlers(void) {
    if (clx_term_handlers_installed) return 0;
    clx_term_handlers_installed = 1;
    static const int signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCONT,
                                   SIGABRT, SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE };
    if (atexit(clx_term_at_exit) != 0) return -1;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        int sig = signals[i];
        struct sigaction old, action;
        if (sigaction(sig, NULL, &old) < 0) return -1;
        if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) continue;  // e.g. nohup
        clx_term_old_actions[sig] = old;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = clx_term_on_signal;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigfillset(&action.sa_mask);
        if (sigaction(sig, &action, NULL) < 0) return -1;
    }
    return 0;
}

// ---- Termination signals: the machine ends in order (QEMU's qemu_system_killed) -----------
static int clx_shutdown_fd = -1;
static int clx_shutdown_signal;
static int clx_shutdown_pid;

static void clx_on_shutdown_signal(int sig, siginfo_t *info, void *context) {
    (void)context;
    int saved_errno = errno;
    __atomic_store_n(&clx_shutdown_pid, info ? (int)info->si_pid : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&clx_shutdown_signal, sig, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t ignored = write(clx_shutdown_fd, &one, sizeof one);  // async-signal-safe
    (void)ignored;
    errno = saved_errno;
}

int clx_shutdown_signals_install(int event_fd) {
    clx_shutdown_fd = event_fd;
    static const int signals[] = { SIGINT, SIGTERM, SIGHUP };
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = clx_on_shutdown_signal;
        action.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&action.sa_mask);
        if (sigaction(signals[i], &action, NULL) < 0) return -1;
    }
    // A parent may start us with them blocked (a blocked mask is inherited across exec):
    // unblock them here, before any thread exists, so every thread inherits a mask that
    // lets them in.
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) sigaddset(&set, signals[i]);
    // And SIGSYS, for -sandbox's report (clx_sandbox_trap_install): a thread that blocks it
    // would still die of the filter's trap, but silently.
    sigaddset(&set, SIGSYS);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL) == 0 ? 0 : -1;
}

int clx_shutdown_signal_take(int *pid) {
    int sig = __atomic_exchange_n(&clx_shutdown_signal, 0, __ATOMIC_ACQUIRE);
    *pid = __atomic_load_n(&clx_shutdown_pid, __ATOMIC_RELAXED);
    return sig;
}

const int clx_O_PATH = O_PATH;
const int clx_O_TMPFILE = O_TMPFILE;

int clx_gettid(void) { return (int)syscall(SYS_gettid); }

static void clx_kick_handler(int signal) { (void)signal; }

// Lets `signal` in on the calling thread (new threads inherit its mask).
static int clx_unblock_signal(int signal) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL) == 0 ? 0 : -1;
}

int clx_install_kick_signal(int signal) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = clx_kick_handler;
    sigemptyset(&action.sa_mask);
    if (sigaction(signal, &action, NULL) < 0) return -1;
    // The signal mask is inherited through fork and exec: a parent that blocks the signal
    // (some test runners do) would otherwise make the kick wait forever.
    return clx_unblock_signal(signal);
}

int clx_cpu_has_bit_counts(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 23) & 1)) return 0;  // POPCNT
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((b >> 3) & 1)) return 0;  // BMI1: TZCNT
    // LZCNT (AMD's ABM): without it, F3 0F BD runs as BSR, which counts from the other end.
    if (!__get_cpuid(0x80000001, &a, &b, &c, &d) || !((c >> 5) & 1)) return 0;
    return 1;
#else
    return 0;
#endif
}

int clx_cpu_has_fma(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!((c >> 12) & 1) || !((c >> 27) & 1) || !((c >> 28) & 1)) return 0;  // FMA, OSXSAVE, AVX
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;  // the OS saves XMM and YMM state
#else
    return 0;
#endif
}

// ---- -sandbox: a system call outside the filter's allowlist (SECCOMP_RET_TRAP) ------------
static const char *clx_sandbox_prefix = "";
static const char *const *clx_sandbox_names;
static int clx_sandbox_name_count;

static void clx_sandbox_write(const char *text) {
    ssize_t ignored = write(2, text, strlen(text));  // async-signal-safe
    (void)ignored;
}

static void clx_on_sandbox_trap(int sig, siginfo_t *info, void *context) {
    (void)context;
    // seccomp(2), SECCOMP_RET_TRAP: si_code SYS_SECCOMP, si_syscall the call's number. The
    // call did not run; this thread must not go on as if it had, so the process ends here,
    // by the signal's default action, as SECCOMP_RET_KILL_PROCESS would have ended it.
    int number = info ? info->si_syscall : -1;
    // Its decimal digits, written from the end of the buffer (no snprintf in a handler).
    char digits[16];
    char *number_text = digits + sizeof digits - 1;
    *number_text = 0;
    unsigned value = number < 0 ? 0 : (unsigned)number;
    do { *--number_text = (char)('0' + value % 10); value /= 10; } while (value);
    const char *name = number >= 0 && number < clx_sandbox_name_count && clx_sandbox_names[number]
                     ? clx_sandbox_names[number] : "?";
    clx_term_restore_all_signal_safe();
    clx_sandbox_write(clx_sandbox_prefix);
    clx_sandbox_write("sandbox: system call ");
    clx_sandbox_write(name);
    clx_sandbox_write(" (");
    clx_sandbox_write(number_text);
    clx_sandbox_write(") is not allowed by -sandbox; ending the process\n");
    signal(sig, SIG_DFL);
    clx_unblock_signal(sig);
    raise(sig);
}

int clx_sandbox_trap_install(const char *prefix, const char *const *names, int count) {
    clx_sandbox_prefix = prefix;
    clx_sandbox_names = names;
    clx_sandbox_name_count = count;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = clx_on_sandbox_trap;
    action.sa_flags = SA_SIGINFO;
    sigfillset(&action.sa_mask);
    if (sigaction(SIGSYS, &action, NULL) < 0) return -1;
    return clx_unblock_signal(SIGSYS);
}
