"""The ``pocket-agent-server`` command and its operator subcommands."""
