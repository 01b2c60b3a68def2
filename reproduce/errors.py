"""The one exception type that reaches the user as a single line, never a traceback, and the
argument parser that turns bad options into it."""

import argparse
from pathlib import Path


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and how to fix it.

    The command line prints it on one line and exits with code 2.
    """


class _Parser(argparse.ArgumentParser):
    """argparse prints usage and a message on bad options; this makes it one UserError line instead,
    for every command's parser (run, report, bench)."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see python -m reproduce --help)")


def check_writable(folder: Path, option: str = "--results DIR") -> None:
    """Probe by writing (root ignores permission bits, so os.access alone would say yes); a folder that
    cannot take a file is one line naming the option that picks another."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{folder} is not writable ({error.strerror}): pass {option}") from None


def check_creatable(folder: Path, option: str = "--results DIR") -> None:
    """For a dry run, which creates nothing: the folder, or the nearest folder above it that exists,
    takes a file (probed with a temporary file, removed at once)."""
    import tempfile

    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{folder} cannot be made: {existing} is not a folder; pass {option}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test"):
            pass
    except OSError as error:
        raise UserError(f"{folder} is not writable ({error.strerror}): pass {option}") from None
