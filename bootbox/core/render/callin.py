"""The "call in" script a booted host runs to report up, with Auto Deploy's waiter backoff.

PURE: returns text. Boot kinds put it where their OS runs it once per boot: the ESXi plugin in a
small boot module (stateless: ``/etc/rc.local.d/``) or a kickstart ``%firstboot`` section
(install mode); a Linux image in a unit or the initramfs. It POSTs ``boot_id`` to the host's
``up`` URL (``BootContext.up_url``, which carries the host's token) until bootbox answers 200,
waiting 10 s, then 8–12 s more after each try, at most 5 minutes, and never gives up — as
ESXi's own waiter does (facts §3): 503 means pushes are still running, 409 that one failed
(an operator can fix it and ``bootbox host push``), 404/401 that the appliance lost track of
the host; in every case asking again later is right.

The script needs only a POSIX shell, ``wget`` (GNU or busybox: both print the status line with
``-S``), ``sed`` and ``od``, which ESXi's busybox and every Linux have.
"""

from __future__ import annotations

import shlex


def callin_script(up_url: str, *, first: int = 10, step_min: int = 8, step_max: int = 12, cap: int = 300) -> str:
    """A ``/bin/sh`` script that reports up to ``up_url`` until it gets 200."""
    if not up_url.startswith(("http://", "https://")) or any(ch.isspace() for ch in up_url):
        raise ValueError(f"{up_url!r} is not an http(s) URL")
    if not 0 <= step_min <= step_max or first < 0 or cap < first:
        raise ValueError("want 0 <= step_min <= step_max and 0 <= first <= cap")
    spread = step_max - step_min + 1
    return f"""#!/bin/sh
# bootbox: report this boot to the appliance until it says the host is configured (HTTP 200).
# 503: configuration is still being pushed; anything else: ask again later. Never gives up.
URL={shlex.quote(up_url)}
BOOT_ID="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo "$(date +%s)-$$-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')")"
delay={first}
while :; do
    code=$(wget -q -S -O /dev/null --post-data "boot_id=$BOOT_ID" "$URL" 2>&1 \\
        | sed -n 's/^ *HTTP\\/[0-9.]* \\([0-9][0-9][0-9]\\).*/\\1/p' | tail -n 1)
    if [ "$code" = 200 ]; then
        echo "bootbox: host configured (boot $BOOT_ID)"
        exit 0
    fi
    echo "bootbox: appliance answered ${{code:-nothing}}; asking again in $delay s"
    sleep "$delay"
    delay=$((delay + {step_min} + $(od -An -N1 -tu1 /dev/urandom) % {spread}))
    if [ "$delay" -gt {cap} ]; then delay={cap}; fi
done
"""
