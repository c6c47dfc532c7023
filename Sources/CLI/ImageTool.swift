import Glibc

/// `swemu-img`, the counterpart of `qemu-img`. Its commands arrive with the disk-image work;
/// until then each is refused with a line that says so, and `--help` lists what will come.
public enum ImageTool {
    static let commands: [(name: String, synopsis: String)] = [
        ("amend", "amend [-f fmt] -o options filename"),
        ("check", "check [-f fmt] [--output=ofmt] [-r [leaks | all]] filename"),
        ("commit", "commit [-f fmt] [-b base] filename"),
        ("compare", "compare [-f fmt] [-F fmt] filename1 filename2"),
        ("convert", "convert [-c] [-p] [-f fmt] [-O output_fmt] [-o options] filename output_filename"),
        ("create", "create [-f fmt] [-b backing_file [-F backing_fmt]] [-o options] filename [size]"),
        ("info", "info [-f fmt] [--output=ofmt] [--backing-chain] filename"),
        ("map", "map [-f fmt] [--output=ofmt] filename"),
        ("measure", "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | filename]"),
        ("rebase", "rebase [-f fmt] [-u] -b backing_file [-F backing_fmt] filename"),
        ("resize", "resize [--shrink] [-f fmt] filename [+ | -]size"),
        ("snapshot", "snapshot [-l | -a snapshot | -c snapshot | -d snapshot] filename"),
    ]

    static func help() -> String {
        var out = "swemu-img version \(swemuVersion)\nusage: swemu-img [standard options] command [command options]\n"
        out += "Disk image utility, with qemu-img's commands and syntax\n\n"
        out += "    '-h', '--help'       display this help and exit\n"
        out += "    '-V', '--version'    output version information and exit\n\n"
        out += "Command syntax (not available in this build yet):\n"
        for c in commands { out += "  \(c.synopsis)\n" }
        return out
    }

    /// Runs `swemu-img` with `arguments` (without the program name); returns the exit status
    /// and what to print on stdout and stderr.
    static func run(_ arguments: [String]) -> (status: Int32, stdout: String, stderr: String) {
        guard let first = arguments.first else {
            return (1, "", "swemu-img: Not enough arguments\nTry 'swemu-img --help' for more information\n")
        }
        switch first {
        case "-h", "--help", "help":
            return (0, help(), "")
        case "-V", "--version":
            return (0, "swemu-img version \(swemuVersion)\nCopyright (c) 2026 the swemu developers\n", "")
        default:
            if commands.contains(where: { $0.name == first }) {
                return (1, "", "swemu-img: '\(first)': disk image commands are not available in this build yet; accepted: --help, --version\n")
            }
            return (1, "", "swemu-img: Command not found: \(first)\nTry 'swemu-img --help' for more information\n")
        }
    }

    public static func main(arguments: [String]) -> Never {
        let result = run(arguments)
        writeOut(result.stdout, fd: 1)
        writeOut(result.stderr, fd: 2)
        exit(result.status)
    }
}

/// Writes `text` to `fd` whole (stdout/stderr of the CLI tools).
func writeOut(_ text: String, fd: Int32) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        bytes = bytes.dropFirst(n)
    }
}
