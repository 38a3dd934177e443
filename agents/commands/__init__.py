"""``edgesplit`` subcommands contributed by :mod:`agents` (entry-point group ``edgesplit.commands``)."""
