import CLI

SystemEmulator.main(target: .riscv64, arguments: Array(CommandLine.arguments.dropFirst()))
