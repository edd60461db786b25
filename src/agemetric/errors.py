"""Errors meant for the user: the CLI prints their message on one line, without a traceback."""


class AgemetricError(Exception):
    """A problem with the user's input (option, file, plugin name, data).

    The message names the offending setting, file or row and says what was expected. A setting
    is named as Python names it (``data_dir: no UTKFace images in 'x'``, ``config_file: ...``);
    the ``agemetric`` command shows its option instead (``--data-dir: ...``, ``--config: ...``).

    Examples:
        >>> import agemetric
        >>> try:
        ...     agemetric.resolve(sets=["k=0"])
        ... except agemetric.AgemetricError as exc:
        ...     print(exc)
        k must be >= 1, got 0
    """

    exit_code = 2


class PluginError(AgemetricError, ValueError):
    """A plugin is unknown, registered twice, or broke its contract, or a part was called with
    arguments it does not take (a ``ValueError`` too, so ``except ValueError`` catches it).

    Examples:
        >>> import agemetric
        >>> agemetric.create("loss", "revised-contrastiv")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agemetric.errors.PluginError: unknown loss 'revised-contrastiv'...
    """
