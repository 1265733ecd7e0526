"""The one exception type a user is meant to read.

Anything raised as :class:`GeosamError` is a problem with the user's input or environment that
they can fix; the CLI prints its message as a single line and exits with status 2. Everything
else is a bug and keeps its traceback.
"""


class GeosamError(Exception):
    """A user-actionable error: the message names the file or option and what to do."""
