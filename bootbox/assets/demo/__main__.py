"""``python -m bootbox.assets.demo DEST [--cache DIR]``: see :mod:`bootbox.assets.demo.cli`."""

from bootbox.assets.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
