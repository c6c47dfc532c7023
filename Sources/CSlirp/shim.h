// libslirp (Debian's libslirp-dev): the user-mode network stack QEMU's -netdev user uses.
// Linked without pkg-config: slirp.pc requires glib-2.0 for static builds, which swemu does
// not need (libslirp.h itself includes only libc headers).
#include <slirp/libslirp.h>
