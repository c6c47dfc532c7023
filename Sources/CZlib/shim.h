// zlib, from Debian's zlib1g-dev (installed by scripts/setup), as a system library target.
#include <zlib.h>
