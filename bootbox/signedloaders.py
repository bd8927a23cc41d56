"""Alias kept for the documented command ``python -m bootbox.signedloaders ARCH DEST``.

The signed-loader fetcher lives in :mod:`bootbox.assets.signedloaders` (``python -m
bootbox.assets.signedloaders`` is the same command); this module only runs its ``main``. It is
named in docs/firmware.md, appliance/bootbox.toml and appliance/install.sh.
"""

from bootbox.assets.signedloaders import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
