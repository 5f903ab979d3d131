"""The error every subcommand raises for a user's mistake or an unusable input:
the CLI prints it as one line and exits 2 (bench/cli.py)."""


class UserError(Exception):
    """Bad input or an unusable environment, said in one line."""
