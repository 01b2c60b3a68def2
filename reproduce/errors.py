"""The one exception type that reaches the user as a single line, never a traceback."""


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and how to fix it.

    The command line prints it on one line and exits with code 2.
    """
