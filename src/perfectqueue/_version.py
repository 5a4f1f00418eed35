"""The package's version (a module of its own: every part may import it without the package root)."""

__version__ = "0.1.0"
