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

/// Terminal window size (TIOCGWINSZ), for the console multiplexer's help text.
int clx_get_winsize(int fd, unsigned short *rows, unsigned short *cols);

/// Opens a pseudo-terminal master (posix_openpt + grantpt + unlockpt), non-blocking and
/// close-on-exec, and writes the slave's path into `name` (NUL-terminated).
int clx_open_pty(char *name, size_t name_len);

/// Sets the pty master's slave side to raw mode so a guest console sees bytes unchanged.
int clx_pty_make_raw(int master_fd);

static const unsigned long clx_TIOCGWINSZ = TIOCGWINSZ;
static const unsigned long clx_FIONREAD = FIONREAD;
static const int clx_EPOLLIN = EPOLLIN;
static const int clx_EPOLLOUT = EPOLLOUT;
static const int clx_EPOLLERR = EPOLLERR;
static const int clx_EPOLLHUP = EPOLLHUP;
static const int clx_EPOLLRDHUP = EPOLLRDHUP;

/// MAP_FAILED is a pointer-valued macro Swift cannot import.
static inline int clx_is_map_failed(void *p) { return p == MAP_FAILED; }

#endif
