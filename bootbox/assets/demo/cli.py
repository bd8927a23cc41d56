"""``python -m bootbox.assets.demo DEST [--cache DIR]`` (also ``python -m bootbox.demo``): build
the demo payload and print where it is, as JSON, with a sample iPXE script that boots it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bootbox.assets.demo.build import build_demo_assets
from bootbox.errors import BootboxError

__all__ = ["main"]

DESCRIPTION = "The demo boot payload: a Debian kernel plus a tiny busybox initramfs that reports in."


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootbox.demo DEST [--cache DIR]``: build the assets and print them as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bootbox.demo", description=DESCRIPTION)
    parser.add_argument("dest", type=Path, help="output directory for vmlinuz and initrd.img")
    parser.add_argument("--cache", type=Path, default=None, help="download/unpack cache")
    parser.add_argument(
        "--callback", default="http://198.18.0.1:8080/booted",
        help="callback URL used in the sample iPXE script that is printed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        assets = build_demo_assets(args.dest, cache=args.cache)
    except BootboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = {k: str(v) for k, v in asdict(assets).items()}
    out["ipxe_script"] = assets.ipxe_script("http://198.18.0.1:8080", args.callback)
    print(json.dumps(out, indent=2))
    return 0
