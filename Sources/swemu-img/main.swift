import CLI

ImageTool.main(arguments: Array(CommandLine.arguments.dropFirst()))
