"""Fixtures for the ESXi plugin's tests: the simulated ESXi host (see ``esxsim``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from bootbox_esxi.tests.esxsim import EsxSim, build


@pytest.fixture(scope="session")
def esxsim_binary() -> Path:
    """The simulator, built once per session (and cached across sessions by source digest)."""
    return build()


@pytest.fixture
def esxsim(esxsim_binary: Path, tmp_path: Path) -> Iterator[EsxSim]:
    """A fresh simulated stateless ESXi host, stopped (by PID) at the end of the test."""
    sim = EsxSim(esxsim_binary, tmp_path / "esxsim")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
