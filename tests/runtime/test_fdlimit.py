"""The appliance raises its open-file limit to what max_transfers and connection_limit need
(bootbox.runtime.fdlimit): started by hand from a root shell it would keep 1,024 and a boot storm
would end in EMFILE. Each case runs in a child process whose limits are set before it starts."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

from bootbox.runtime.fdlimit import RESERVE, descriptors_needed

PROBE = textwrap.dedent("""
    import logging, resource, sys
    from bootbox.runtime.fdlimit import raise_open_file_limit
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    now = raise_open_file_limit(int(sys.argv[1]), logging.getLogger("probe"))
    print("soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0], "returned", now)
""")


def _run(wanted: int, soft: int, hard: int) -> str:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run([sys.executable, "-c", PROBE, str(wanted)], capture_output=True, text=True, timeout=60,
                          preexec_fn=limits, check=True)
    return done.stdout


def test_what_the_default_limits_need() -> None:
    assert descriptors_needed(max_transfers=2048, connection_limit=1000) == 4096 + 2000 + RESERVE


def test_the_soft_limit_is_raised_to_what_is_needed() -> None:
    out = _run(6000, 1024, 8192)
    assert "soft 6000 returned 6000" in out
    assert "raised from 1024 to 6000" in out


def test_it_stops_at_the_hard_limit_and_says_which_keys() -> None:
    out = _run(6000, 1024, 2048)
    assert "soft 2048 returned 2048" in out
    assert "WARNING" in out and "max_transfers" in out and "connection_limit" in out


def test_a_higher_limit_is_never_lowered() -> None:
    out = _run(3000, 8000, 8192)
    assert "soft 8000 returned 8000" in out
    assert "raised" not in out and "WARNING" not in out
