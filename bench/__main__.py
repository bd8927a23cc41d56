"""Run every benchmark: one table per benchmark, bootbox beside its reference, and JSON.

    python -m bench                      everything at full size (about 30-40 minutes on 2 cores)
    python -m bench --quick              a small smoke run of everything (a couple of minutes)
    python -m bench --only dhcp_storm,soak --runs 5 --json results/

Each benchmark measures bootbox and a reference (dnsmasq, tftpd-hpa, nginx, or bootbox itself
at a smaller scale) in the same run on this machine — the network ones across a Linux bridge,
servers and clients in their own namespaces (bench/lan.py), never over 127.0.0.1 — and each figure is the median of
``--runs`` runs where a benchmark repeats (the storms, TFTP and HTTP); the soak and the
store-at-scale run once, their length being the repetition. ``--json DIR`` writes
``DIR/<table>.json`` per table. A benchmark whose tools or privileges are missing is skipped
with the reason; ``--strict`` makes that (or any failure) exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import Row, Table, positive_int

Runner = Callable[[bool, "int | None"], list[Table]]


def _boot_path(quick: bool, runs: int | None) -> list[Table]:
    from bench import boot_path

    size, count = (2, runs or 1) if quick else (16, runs or 3)
    rows, cpu, peak = boot_path.measure(size, count)
    return [Table("boot_path", f"Boot path: TFTP and HTTP throughput, {size} MiB file, median of {count} run(s) "
                               "(across a bridge, curl)", rows,
                  meta={"size_mib": size, "runs": count, "cpu_seconds": cpu, "peak_pss_mib": peak},
                  notes=["CPU seconds over the whole run: " + ", ".join(f"{k} {v}" for k, v in cpu.items()),
                         "Peak memory (PSS of each process tree): " + ", ".join(f"{k} {v} MiB" for k, v in peak.items())])]  # fmt: skip


def _boot_path_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces on a bridge)"
    for tool in ("curl", "in.tftpd", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool} (apt-get install curl tftpd-hpa nginx-light)"
    return None


def _rules(quick: bool, runs: int | None) -> list[Table]:
    from bench import rules

    count, hosts, sample = (500, 2000, 1000) if quick else (10_000, 100_000, 20_000)
    figures = rules.run(count, hosts, sample, seed=1)
    rows = [Row(f.name, f.unit, f.value, float("nan"), "", higher_is_better=False,
                target=f"< {f.target:g} {f.unit}" if f.target is not None else "")  # fmt: skip
            for f in figures]
    return [Table("rules", f"Rules engine: {count:,} rules, {hosts:,} hosts, {sample:,} timed decisions (in process)",
                  rows, meta={"rules": count, "hosts": hosts, "sample": sample},
                  notes=["no reference tool: targets from bench/rules.py"])]  # fmt: skip


def _module(name: str) -> tuple[Runner, Callable[[], str | None]]:
    module = importlib.import_module(f"bench.{name}")
    return (lambda quick, runs: module.tables(quick=quick, runs=runs)), module.requirements


BENCHMARKS: dict[str, Callable[[], tuple[Runner, Callable[[], str | None]]]] = {
    "boot_path": lambda: (_boot_path, _boot_path_requirements),
    "tftp_windowsize": lambda: _module("tftp_windowsize"),
    "dhcp_storm": lambda: _module("dhcp_storm"),
    "full_boot_storm": lambda: _module("full_boot_storm"),
    "store_scale": lambda: _module("store_scale"),
    "soak": lambda: _module("soak"),
    "rules": lambda: (_rules, lambda: None),
    "esxi": lambda: _module("esxi"),
    "flood": lambda: _module("flood"),
    "cache_storm": lambda: _module("cache_storm"),
    "linux_image": lambda: _module("linux_image"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each: a smoke test")
    parser.add_argument("--runs", type=positive_int, help="runs per figure (default 3, 1 with --quick)")
    parser.add_argument("--json", type=Path, metavar="DIR", help="write DIR/<table>.json for every table")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a benchmark is skipped or fails")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in chosen + [n for n in args.skip.split(",") if n] if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [n for n in chosen if n not in args.skip.split(",")]

    problems: list[str] = []
    print(f"bootbox benchmarks ({'quick' if args.quick else 'full'}), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for name in chosen:
        runner, requirements = BENCHMARKS[name]()
        reason = requirements()
        if reason:
            print(f"\n[{name}] skipped: {reason}", flush=True)
            problems.append(f"{name}: skipped ({reason})")
            continue
        started = time.perf_counter()
        try:
            tables = runner(args.quick, args.runs)
        except Exception as exc:  # one broken benchmark must not hide the others' tables
            traceback.print_exc()
            print(f"\n[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
            problems.append(f"{name}: failed ({exc})")
            continue
        for table in tables:
            table.meta["seconds"] = round(time.perf_counter() - started, 1)
            table.show()
            table.write(args.json)
        print(f"[{name}] took {time.perf_counter() - started:.0f} s", flush=True)
    if problems:
        print("\nnot measured: " + "; ".join(problems))
    if args.json:
        print(f"\nJSON written to {args.json}/")
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
