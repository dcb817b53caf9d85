"""The one definition of the version: pyproject.toml reads it (setuptools' dynamic version)."""

__version__ = "6.0.0.dev0"
