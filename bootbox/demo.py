"""Alias kept for the documented command ``python -m bootbox.demo DEST [--cache DIR]``.

The demo payload builder lives in :mod:`bootbox.assets.demo` (``python -m bootbox.assets.demo``
is the same command); this module only runs its :func:`~bootbox.assets.demo.cli.main`.
"""

from bootbox.assets.demo.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
