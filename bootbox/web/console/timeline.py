"""Where a boot begins on a host's timeline, so "elapsed" counts from the machine's power-on.

A network boot asks for DHCP more than once: a UEFI machine's firmware asks (offer, maybe the
boot-server ack), loads iPXE over TFTP or HTTP, and iPXE asks again before it fetches its
script. Treating every DHCP step after another step as a new boot restarted "elapsed" at iPXE's
DHCP, half-way through one boot. The steps themselves say which DHCP it was: the event of a DHCP
answer carries ``ipxe`` (the packet came from iPXE: user class ``iPXE`` or option 175).

The rule (:func:`begins_boot`), one for the server-rendered page and for the page's script
(``bootbox/web/static/console.js``, ``beginsBoot``, which mirrors it; a browser test runs both
on the same steps):

* the first step shown begins a boot;
* a DHCP step from the **firmware** (no ``ipxe``) begins a boot, unless the step just before it
  is a firmware DHCP step too (its offer and boot-server ack, or retried DISCOVERs);
* a DHCP step from **iPXE** begins a boot unless the boot so far has a DHCP step and no script
  (``http.script``) or report-in (``booted``) yet: iPXE chain-loaded by the firmware's loader
  continues that boot, while a BIOS machine's iPXE ROM (no firmware DHCP before it) or iPXE
  after a script or a report-in is a machine booting again;
* nothing else begins a boot (loader, script, kernel, report-in, pushes, operator actions).

A DHCP step after a report-in therefore always begins the next boot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bootbox.model import BootEvent, EventKind

DHCP_STEPS = frozenset({EventKind.DHCP_OFFER.value, EventKind.DHCP_ACK.value})
"""Steps that answer a DHCP request (the only steps that can begin a boot after the first)."""
PAST_LOADER = frozenset({EventKind.HTTP_SCRIPT.value, EventKind.BOOTED.value})
"""Steps after which iPXE's DHCP is a new boot, not the loader of this one asking again."""


def from_ipxe(event: BootEvent) -> bool:
    """Whether a DHCP step answered iPXE (``data.ipxe``, recorded with every DHCP answer)."""
    return bool(event.data.get("ipxe"))


def begins_boot(boot: Sequence[BootEvent], event: BootEvent) -> bool:
    """Whether ``event`` begins a new boot after ``boot``, the steps of the current one so far
    (the module's docstring states the rule)."""
    if not boot:
        return True
    if event.kind not in DHCP_STEPS:
        return False
    if not from_ipxe(event):
        before = boot[-1]
        return not (before.kind in DHCP_STEPS and not from_ipxe(before))
    had_dhcp = any(step.kind in DHCP_STEPS for step in boot)
    past_loader = any(step.kind in PAST_LOADER for step in boot)
    return past_loader or not had_dhcp


@dataclass(frozen=True)
class Step:
    """One step of a boot timeline: the event, seconds since its boot began and since the step
    before, and whether it began a boot."""

    event: BootEvent
    elapsed: float
    delta: float | None
    begins: bool


def timeline(events: Iterable[BootEvent]) -> list[Step]:
    """The steps with their times, split into boots by :func:`begins_boot`."""
    steps: list[Step] = []
    boot: list[BootEvent] = []
    previous: BootEvent | None = None
    for event in events:
        begins = begins_boot(boot, event)
        if begins:
            boot = []
        boot.append(event)
        start = boot[0]
        steps.append(Step(event, event.time - start.time, None if previous is None else event.time - previous.time,
                          begins))
        previous = event
    return steps
