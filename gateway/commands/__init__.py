"""One module per `meterwatch` subcommand: `HELP`, `add_arguments(parser)`, `main(args) -> int`."""
