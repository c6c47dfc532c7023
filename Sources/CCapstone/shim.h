// Capstone, from Debian's libcapstone-dev (installed by scripts/setup), as a system library
// target: disassembles the JIT's host code for `-d out_asm`, as QEMU does.
#include <capstone/capstone.h>
