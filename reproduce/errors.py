"""The one exception type that reaches the user as a single line, never a traceback, and the
argument parser that turns bad options into it."""

import argparse


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and how to fix it.

    The command line prints it on one line and exits with code 2.
    """


class _Parser(argparse.ArgumentParser):
    """argparse prints usage and a message on bad options; this makes it one UserError line instead,
    for every command's parser (run, report, bench)."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see python -m reproduce --help)")
