"""The one exception type a user is meant to read.

It lives in the runtime, not in :mod:`geosam.utils`, because the runtime is copied as it is into
the QGIS plugin and must import nothing outside its own folder; :mod:`geosam.utils.errors`
re-exports it so the rest of geosam has one class to raise and catch.

Anything raised as :class:`GeosamError` is a problem with the user's input or environment that
they can fix; the CLI prints its message as a single line and exits with status 2, the plugin
shows it in its message bar. Everything else is a bug and keeps its traceback.
"""


class GeosamError(Exception):
    """A user-actionable error: the message names the file or option and what to do."""
