"""The one exception type that means "the user's input is wrong", and how scripts report it."""

import argparse
import sys
from typing import NoReturn

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A problem with a file, a path or a setting that the user can fix.

    Scripts catch it, print its message as one line on stderr and exit with
    status 2, without a traceback. The message names the file (and line) or
    the setting at fault.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def exit_on_user_error(err: UserError) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit with status 2."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UserError: usage, then one `error:` line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        exit_on_user_error(UserError(message))
