"""Subcommands of the ``edgesplit`` CLI, one module each (see :mod:`edgesplit.cli`)."""
