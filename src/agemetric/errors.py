"""Errors meant for the user: the CLI prints their message on one line, without a traceback."""


class AgemetricError(Exception):
    """A problem with the user's input (option, file, plugin name, data).

    The message names the offending option, file or row and says what was expected.
    """

    exit_code = 2


class PluginError(AgemetricError):
    """A plugin is unknown, registered twice, or broke its contract."""
