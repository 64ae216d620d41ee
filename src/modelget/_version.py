"""The version, in a leaf module: lower floors read it from here, never from the package."""

__version__ = "0.1.0.dev0"
