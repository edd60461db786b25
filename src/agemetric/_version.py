"""The version of agemetric: its single source (pyproject.toml and the package read it here)."""

__version__ = "0.1.0"
