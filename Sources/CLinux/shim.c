// Implementations of CLinux.h. Keep this file small: every line here is unchecked by Swift.
#define _GNU_SOURCE 1
#include "CLinux.h"
#include <pthread.h>
#include <string.h>

int clx_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
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
