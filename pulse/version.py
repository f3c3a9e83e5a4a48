"""The library's version, in a leaf module so that storage code can record it without importing the package face."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pulse")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
