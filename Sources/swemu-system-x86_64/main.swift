import CLI

SystemEmulator.main(target: .x86_64, arguments: Array(CommandLine.arguments.dropFirst()))
