"""The base class of errors whose message tells the user what is wrong and how to fix it.

Command-line tools print such an error as one paragraph and exit with code 2 (the traceback only
with --debug); any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint, paths); the message names the fix."""


class ConfigError(UserError, ValueError):
    """A config file or override the user must fix; the message says how."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" when it has none), for one-paragraph errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
