"""The payload's shell scripts, shipped beside this module as files (``scripts/``).

``scripts/init.sh`` becomes the initramfs's ``/init``; its ``@MARKER_START@``, ``@MARKER_OK@``
and ``@MARKER_FAIL@`` are replaced by the console markers of :mod:`bootbox.assets.demo.payload`,
so the lab and the tests look for the very strings the script prints. ``scripts/udhcpc.sh``
becomes ``/etc/udhcpc.script``, busybox udhcpc's event hook. Both are plain files so that an
editor, ``sh -n`` and shellcheck see them as shell; they are package data, read with
importlib.resources.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from bootbox.assets.demo.payload import MARKER_FAIL, MARKER_OK, MARKER_START

__all__ = ["init_script", "udhcpc_script"]


@cache
def _script(name: str) -> str:
    return files("bootbox.assets.demo").joinpath("scripts", name).read_text(encoding="utf-8")


def init_script() -> str:
    """The ``/init`` shell script, with the console markers filled in."""
    return (
        _script("init.sh")
        .replace("@MARKER_START@", MARKER_START)
        .replace("@MARKER_OK@", MARKER_OK)
        .replace("@MARKER_FAIL@", MARKER_FAIL)
    )


def udhcpc_script() -> str:
    """``/etc/udhcpc.script``: configures the lease and leaves the address in /run for /init."""
    return _script("udhcpc.sh")
