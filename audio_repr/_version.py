"""The library's version (pyproject.toml says the same; a run record names it)."""

__version__ = "0.1.0"
