"""The one exception type that means "the user's input is wrong"."""


class UserError(Exception):
    """A problem with a file, a path or a setting that the user can fix.

    Scripts catch it, print its message as one line on stderr and exit with
    status 2, without a traceback. The message names the file (and line) or
    the setting at fault.
    """
