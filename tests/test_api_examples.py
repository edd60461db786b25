"""Every public class and function of the package root and the building-block namespaces has an example.

The API reference renders a Google-style ``Examples:`` section as code (griffe renders no other
spelling so), and pytest runs its ``>>>`` lines (``--doctest-modules``); so every name exported
by these namespaces must have such a section in its own docstring (a class's docstring is not
inherited: ``vars(cls)["__doc__"]``).
"""

from __future__ import annotations

import importlib
import inspect
import logging

import pytest

#: Namespaces whose ``__all__`` is checked.
NAMESPACES = (
    "agemetric",
    "agemetric.losses",
    "agemetric.miners",
    "agemetric.retrievers",
    "agemetric.backbones",
    "agemetric.datasets",
    "agemetric.framers",
    "agemetric.pml",
)
#: Modules whose every public function defined there is checked.
FUNCTION_MODULES = ("agemetric.functional", "agemetric.metrics", "agemetric.intervals", "agemetric.groups")
#: Exported names that are neither classes nor functions, so have no docstring of their own at run
#: time (a type alias, documented by the string below it). Anything else must be a class or function.
NOT_DOCUMENTED_OBJECTS = {("agemetric.pml", "IndicesTuple"), ("agemetric", "hookimpl")}


def public_names() -> list[tuple[str, str]]:
    names = []
    for module_name in NAMESPACES:
        module = importlib.import_module(module_name)
        names += [(module_name, name) for name in module.__all__]
    for module_name in FUNCTION_MODULES:
        module = importlib.import_module(module_name)
        names += [
            (module_name, name)
            for name, obj in vars(module).items()
            if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module_name
        ]
    return names


def own_docstring(module_name: str, name: str) -> str:
    """The cleaned docstring the object itself defines ('' when none); fails for an object that is
    neither a class nor a function unless it is listed in `NOT_DOCUMENTED_OBJECTS`."""
    obj = getattr(importlib.import_module(module_name), name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        assert (module_name, name) in NOT_DOCUMENTED_OBJECTS, f"{module_name}.{name} is not a class or function"
        pytest.skip(f"{module_name}.{name} is a {type(obj).__name__}, not a class or function")
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return inspect.cleandoc(doc or "")


def examples_section(doc: str) -> list[str] | None:
    """The lines of the Google-style ``Examples:`` section of a cleaned docstring (the indented
    block under a line that is exactly ``Examples:``), or ``None`` when there is none."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip() == "Examples:":
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break  # the next section or paragraph
                body.append(following.strip())
            return body
    return None


NAMES = public_names()


def test_the_namespaces_are_all_seen():
    seen = {module for module, _ in NAMES}
    assert seen == set(NAMESPACES) | set(FUNCTION_MODULES)
    assert ("agemetric.functional", "knn_mean_age") in NAMES and ("agemetric.metrics", "summarise") in NAMES


@pytest.mark.parametrize(("module_name", "name"), NAMES, ids=[f"{m}.{n}" for m, n in NAMES])
def test_public_name_has_a_doctest_example(module_name, name):
    doc = own_docstring(module_name, name)
    assert doc, f"{module_name}.{name} has no docstring"
    body = examples_section(doc)
    assert body is not None, f"{module_name}.{name}: the docstring has no 'Examples:' section"
    assert any(line.startswith(">>> ") for line in body), f"{module_name}.{name}: 'Examples:' has no '>>>' line"


@pytest.mark.parametrize(("module_name", "name"), NAMES, ids=[f"{m}.{n}" for m, n in NAMES])
def test_griffe_renders_the_example_as_code(module_name, name):
    griffe = pytest.importorskip("griffe")
    doc = own_docstring(module_name, name)
    logging.getLogger("griffe").setLevel(logging.ERROR)  # parameters without annotations: irrelevant here
    sections = griffe.Docstring(doc).parse("google")
    examples = [s for s in sections if s.kind.value == "examples"]
    assert examples, f"{module_name}.{name}: griffe finds no Examples section"
    code = [text for s in examples for kind, text in s.value if kind.value == "examples"]
    assert any(">>>" in text for text in code), f"{module_name}.{name}: griffe finds no doctest code in Examples"
