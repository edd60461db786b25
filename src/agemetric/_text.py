"""Text from outside (file names, values read from files) made safe to print: one line, no
terminal control codes, no undecodable bytes. Torch-free, so bundles use it too."""

from __future__ import annotations

import re

#: C0 and C1 control characters and DEL: each would move the cursor, end the line, ring the bell
#: or start an escape sequence on a terminal
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: how much of a value read from a file an error message shows
SHOWN = 80


def printable(text: str) -> str:
    """``text`` on one line: newlines, tabs and other control characters written as ``\\n``,
    ``\\r``, ``\\t``, ``\\xNN``; bytes that were not UTF-8 (surrogate escapes, as in file names
    that are not UTF-8) as ``\\xNN``.

    Examples:
        >>> printable("a\\nb\\x1b[31m.jpg")
        'a\\\\nb\\\\x1b[31m.jpg'
        >>> printable(b"\\xff.jpg".decode("utf-8", "surrogateescape"))
        '\\\\xff.jpg'
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def shortened(value: object, most: int = SHOWN) -> str:
    """``repr(value)``, printable and cut to ``most`` characters (``...`` marks the cut), for
    echoing a value read from a file in an error message.

    Examples:
        >>> shortened("x" * 1000, most=12)
        "'xxxxxxxx..."
    """
    full = repr(value)
    text = printable(full[: 4 * most])  # a value of megabytes is cut before it is escaped
    return text if len(text) <= most and len(full) <= 4 * most else text[: most - 3] + "..."


def size_text(n: int) -> str:
    """A number of bytes in decimal units, three significant digits.

    Examples:
        >>> size_text(512), size_text(6_144), size_text(999_600), size_text(1_165_000_000), size_text(20 * 10**9)
        ('512 B', '6.14 kB', '1 MB', '1.17 GB', '20 GB')
    """
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        shown = float(f"{n / scale:.3g}")  # rounded first: 999,600 bytes are 1 MB, not 1000 kB
        if shown >= 1 and (shown < 1000 or unit == "TB"):
            return f"{shown:g} {unit}" if shown < 1000 else f"{shown:.0f} {unit}"
    return f"{n} B"
