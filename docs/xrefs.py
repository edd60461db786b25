"""A griffe extension: agemetric's names in docstrings become links on the site.

Docstrings name other objects in plain backticks, fully qualified (`` `agemetric.types.Pairs` ``,
`` `agemetric.estimates.age_spread()` ``), so that ``help()`` and an editor's tooltip read as
text. On the site each such name becomes a cross-reference (an optional one: a name not rendered
on any page stays code), titled by its short form (``Pairs``, ``age_spread()``,
``PhotoResult.to_dict()``).
"""

from __future__ import annotations

import re

import griffe

#: a backticked dotted name of agemetric or of one of its plugin packages, maybe called
NAME = re.compile(r"(?<![`\w])`(agemetric(?:_\w+)?(?:\.\w+)+)(\(\))?`(?!`)")


def short(name: str, called: bool) -> str:
    """The title of a link to ``name``: from its first capitalised part (a class and its member),
    else its last part when it is called (a function), else the whole name (a module)."""
    parts = name.split(".")
    first_class = next((i for i, part in enumerate(parts) if part[:1].isupper()), None)
    if first_class is not None:
        title = ".".join(parts[first_class:])
    else:
        title = parts[-1] if called else name
    return title + ("()" if called else "")


def linked(text: str) -> str:
    """``text`` with each backticked agemetric name replaced by an optional cross-reference."""
    return NAME.sub(
        lambda m: f'<autoref identifier="{m[1]}" optional><code>{short(m[1], bool(m[2]))}</code></autoref>', text
    )


class CrossReferences(griffe.Extension):
    """Rewrites the docstrings of every loaded object (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen: set[int] = set()

        def visit(obj) -> None:
            if obj.is_alias or id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = linked(obj.docstring.value)
            for member in obj.members.values():
                visit(member)

        visit(pkg)
