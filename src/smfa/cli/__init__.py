"""The ``smfa`` command line: argument parsing only; each subcommand calls a stage (:mod:`smfa.stages`)."""
