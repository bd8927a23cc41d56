"""Every benchmark runs in ``--quick`` mode, so none can rot unnoticed.

Each test runs ``python -m bench --quick --only NAME --json DIR`` as a user would and checks
what the benchmark reports for *correctness*, never speed: every transfer, DHCP answer and
boot completed, and the soak's descriptors, threads and memory stayed within generous bounds
after its warm-up. A benchmark whose tools or privileges are missing is skipped (or failed
under ``BOOTBOX_LAB_REQUIRED=1``, as CI runs).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import BENCHMARKS
from tests.conftest import ROOT
from tests.support.lab_fixtures import lab_unavailable

SOAK_BOUNDS = {"fds": 10, "threads": 4, "rss_mib": 40.0}
"""Growth allowed after the soak's warm-up: a leaked socket or thread per boot, or ~100 KiB of
memory per boot, exceeds them many times over; the quick soak legitimately grows a few MiB
while its event rings fill."""


TIMEOUTS = {"linux_image": 1800}
"""Seconds a quick run may take where 900 is not enough: two TCG boots, one of a real OS."""


def _run(name: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    _, requirements = BENCHMARKS[name]()
    reason = requirements()
    if reason:
        lab_unavailable(f"benchmark {name} {reason}")
    out = tmp_path / "json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", name, "--json", str(out), "--strict"],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUTS.get(name, 900),
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tables = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("*.json"))}
    assert tables, done.stdout[-2000:]
    for table in tables.values():
        assert table["rows"], table
        assert name in done.stdout or table["benchmark"] in done.stdout
    return tables


def _row(table: dict[str, Any], starts: str) -> dict[str, Any]:
    matches = [row for row in table["rows"] if row["figure"].startswith(starts) or starts in row["figure"]]
    assert matches, f"no row {starts!r} in {[r['figure'] for r in table['rows']]}"
    return matches[0]


def _all_measured(table: dict[str, Any]) -> None:
    for row in table["rows"]:
        assert row["bootbox"] is not None and math.isfinite(row["bootbox"]), row


def check_boot_path(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["boot_path"]
    _all_measured(table)
    rates = [row for row in table["rows"] if row["unit"] == "MB/s"]
    assert len(rates) == 5 and all(row["bootbox"] > 0 and row["reference"] > 0 for row in rates)  # all completed
    cpu = {row["figure"].split(":")[0]: row for row in table["rows"] if row["unit"] == "s"}
    assert set(cpu) == {"TFTP", "HTTP"} and cpu["TFTP"]["bootbox"] > 0, cpu  # tftpd-hpa's needs a cgroup
    _memory_measured(table, {"bootbox", "tftpd-hpa", "nginx"})


def _memory_measured(table: dict[str, Any], servers: set[str]) -> None:
    """Each server's peak memory was sampled (every run reports CPU and memory, issue 6)."""
    peaks = table["meta"]["peak_pss_mib"]
    assert set(peaks) == servers and all(peak > 0 for peak in peaks.values()), peaks


def check_tftp_windowsize(tables: dict[str, dict[str, Any]]) -> None:
    assert {"tftp_windowsize", "tftp_windowsize_rtt"} <= set(tables)
    for table in tables.values():
        _all_measured(table)
        assert any(row["figure"].startswith("windowsize 8") for row in table["rows"])
        _memory_measured(table, {"bootbox", "tftpd-hpa"})


def check_dhcp_storm(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["dhcp_storm_paced"]
    _all_measured(table)
    assert _row(table, "OFFERs answered")["bootbox"] == 100.0
    assert _row(table, "4011 ACKs answered")["bootbox"] == 100.0
    assert _row(table, "OFFERs answered")["reference"] == 100.0  # the reference ran too
    assert _row(table, "udp/67 socket drops")["bootbox"] == 0
    assert _row(table, "OFFER p99, user-space")["bootbox"] > 0  # both clocks timed every answer


def check_full_boot_storm(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["full_boot_storm"]
    assert table["meta"]["errors"] == [], table["meta"]["errors"]
    failed = _row(table, "failed boots")
    assert failed["bootbox"] == 0 and failed["reference"] == 0
    assert _row(table, "boots completed")["bootbox"] == 100.0
    total = _row(table, "total: first power-on")  # every host booted on both stacks, across the bridge
    assert total["bootbox"] > 0 and total["reference"] > 0, total
    assert all(_row(table, figure)["reference"] > 0 for figure in ("server CPU", "server peak memory"))


def check_store_scale(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["store_scale"]
    _all_measured(table)
    assert _row(table, "OFFERs answered")["bootbox"] == 100.0
    assert _row(table, "store + host log files")["bootbox"] > _row(table, "store + host log files")["reference"]  # the big store was built


def check_soak(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["soak"]
    assert table["meta"]["failures"] == [], table["meta"]["failures"]
    assert _row(table, "boots completed")["bootbox"] == 100.0
    growth = table["meta"]["growth_after_warm_up"]
    for key, bound in SOAK_BOUNDS.items():
        assert growth[key] <= bound, f"{key} grew by {growth[key]} after the warm-up: {table['meta']['samples']}"


def check_rules(tables: dict[str, dict[str, Any]]) -> None:
    _all_measured(tables["rules"])


def check_esxi(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["esxi"]
    assert all(row["bootbox"] is not None and row["bootbox"] > 0 for row in table["rows"]), table["rows"]
    assert table["meta"]["modules"] > 0  # the bundle imported and every module was served (sizes checked)
    applied = tables["esxi-hostprofile"]  # every simulated host configured and compliant after
    assert _row(applied, "hosts configured")["bootbox"] == _row(applied, "hosts configured")["reference"] > 0
    assert _row(applied, "hosts compliant")["bootbox"] == applied["meta"]["hosts"]


def check_flood(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["flood"]
    boot = _row(table, "boot time under the flood")  # the host booted, under the flood and on an idle appliance
    assert boot["bootbox"] is not None and boot["bootbox"] > 0 and boot["reference"] > 0, boot


def check_cache_storm(tables: dict[str, dict[str, Any]]) -> None:
    table = tables["cache_storm"]
    assert table["meta"]["errors"] == [], table["meta"]["errors"]
    failed = _row(table, "failed boots")
    assert failed["bootbox"] == 0 and failed["reference"] == 0
    copies = _row(table, "appliance: image copies sent")  # through nginx: one copy; without it: one per host
    assert copies["bootbox"] == pytest.approx(1.0, abs=0.01), copies
    assert copies["reference"] == pytest.approx(table["meta"]["hosts"], rel=0.05), copies
    assert _row(table, "reboot wave: image bytes sent")["bootbox"] == 0  # the warm cache served every repeat


def check_linux_image(tables: dict[str, dict[str, Any]]) -> None:
    build = tables["linux_image"]
    _all_measured(build)  # a cold build (or the reused one's recorded time) and the same recipe found cached
    assert build["meta"]["package_count"] > 0 and build["meta"]["sizes"]["filesystem.squashfs"] > 0
    boot = tables["linux_image_boot"]
    configured = _row(boot, "boot to")  # both guests reported in: the image (configured) and the demo
    assert configured["bootbox"] > 0 and configured["reference"] > 0, configured
    kinds = [event["kind"] for event in boot["meta"]["image_timeline"]]
    assert kinds[-1] == "booted" and "http.script" in kinds, kinds
    assert _row(boot, "root image requested")["bootbox"] > 0  # live-boot fetched the root over HTTP


CHECKS: dict[str, Callable[[dict[str, dict[str, Any]]], None]] = {
    "boot_path": check_boot_path,
    "tftp_windowsize": check_tftp_windowsize,
    "dhcp_storm": check_dhcp_storm,
    "full_boot_storm": check_full_boot_storm,
    "store_scale": check_store_scale,
    "soak": check_soak,
    "rules": check_rules,
    "esxi": check_esxi,
    "flood": check_flood,
    "cache_storm": check_cache_storm,
    "linux_image": check_linux_image,
}


def test_every_benchmark_has_a_smoke_check() -> None:
    assert set(CHECKS) == set(BENCHMARKS)


NETNS = {"boot_path", "dhcp_storm", "full_boot_storm", "flood", "cache_storm", "linux_image"}
"""Benchmarks that build network namespaces (bench.lan or bootbox.lab): marked ``netns``."""
MARKS = {"linux_image": (pytest.mark.image, pytest.mark.qemu)}
"""Further markers: the Linux image bench builds an image (reused with TEST_LINUX_IMAGES_DIR) and boots QEMU."""


def _env(name: str, request: pytest.FixtureRequest) -> dict[str, str] | None:
    """The Linux image bench reuses the run's shared test image (``linux_image``, built once per
    run) through ``TEST_LINUX_IMAGES_DIR``, rather than building one of its own cold: its quick
    cold figure is then the build's recorded time (bench/linux_image.py)."""
    if name != "linux_image":
        return None
    image = request.getfixturevalue("linux_image")
    return {**os.environ, "TEST_LINUX_IMAGES_DIR": str(image.images_dir)}


def _param(name: str) -> Any:
    return pytest.param(name, marks=[*([pytest.mark.netns] if name in NETNS else []), *MARKS.get(name, ())])


@pytest.mark.parametrize("name", [_param(n) for n in sorted(CHECKS)])
def test_benchmark_runs_quick_and_reports_complete_results(name: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    CHECKS[name](_run(name, tmp_path, _env(name, request)))
