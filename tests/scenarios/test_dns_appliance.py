"""DNS in the running appliance: records follow the hosts bootbox manages (checked with dig)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bootbox.appliance import Appliance
from tests.conftest import free_port, test_settings

MAC = "52:54:00:d0:00:01"


def _dig(port: int, *query: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=2", "+tries=1", *query],
                          capture_output=True, text=True, check=True, timeout=20).stdout.strip()


def test_forward_and_reverse_records_follow_the_hosts(tmp_path: Path) -> None:
    port = free_port()
    settings = test_settings(tmp_path, dns={"enabled": True, "bind_address": "127.0.0.1", "port": port,
                                            "domain": "lab.example", "records": ["nas A 198.18.0.9"]})
    appliance = Appliance(settings, load_entrypoints=False)
    appliance.start()
    try:
        service = appliance.service
        assert service is not None
        service.host_script(MAC, {"hostname": "esx01", "ip": "198.18.0.21"}, "198.18.0.21", "http://x")
        assert _dig(port, "esx01.lab.example", "A") == "198.18.0.21"
        assert _dig(port, "-x", "198.18.0.21") == "esx01.lab.example."
        assert _dig(port, "nas.lab.example", "A") == "198.18.0.9"
        assert _dig(port, "+tcp", "esx01.lab.example", "A") == "198.18.0.21"
        # The host is renamed and re-addressed: the next query sees it at once.
        service.host_script(MAC, {"hostname": "esx02", "ip": "198.18.0.22"}, "198.18.0.22", "http://x")
        assert _dig(port, "esx02.lab.example", "A") == "198.18.0.22"
        assert _dig(port, "-x", "198.18.0.22") == "esx02.lab.example."
        status = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", "esx01.lab.example"],
                                capture_output=True, text=True, check=True, timeout=20).stdout
        assert "status: NXDOMAIN" in status
        assert appliance.status()["dns"]["queries"] >= 6
    finally:
        appliance.stop()
