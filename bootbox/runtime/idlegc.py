"""Collect young garbage while a server is idle, not in the middle of answering a packet.

CPython runs a young-generation collection on whichever thread makes the allocation that
crosses the threshold (700 container objects by default). During a DHCP storm that is nearly
always the DHCP thread, and about half the time before the answer is sent: measured in the
storm benchmark, one packet in ~100 waited 40-390 µs for one.

:func:`collect_if_due` is called by a packet loop once it has answered everything queued
(:class:`bootbox.net.loop.SelectorLoop` does it after every wake-up). When at least
:data:`EARLY` of the threshold has built up, it runs that collection now, in the gap before the
next packet, so the automatic one rarely comes due mid-packet. Young passes then run up to
twice as often, each on half as many objects.

Only young (generation 0) passes are moved. Once generation 1 is due, the next collection is
left to CPython's own trigger, which picks generation 1 or a full pass (weighing how much
long-lived data is new): running those here would either starve full passes — cyclic garbage
in generation 2 never freed — or run them more often than CPython would. So about one young
pass in eleven, and every older one (~1 ms in a storm), still happens wherever the allocation
falls.
"""

from __future__ import annotations

import gc

__all__ = ["EARLY", "collect_if_due"]

EARLY = 0.5
"""Fraction of the young generation's threshold at which an idle loop collects it early."""


def collect_if_due(early: float = EARLY) -> bool:
    """Run generation 0's collection now if it is at least ``early`` due and generation 1 is
    not (that pass is left to CPython); True if it ran."""
    if not gc.isenabled():
        return False
    count0, count1, _ = gc.get_count()
    threshold0, threshold1, _ = gc.get_threshold()
    if threshold0 <= 0 or count0 < threshold0 * early or count1 > threshold1:
        return False
    gc.collect(0)  # counts one more young pass towards generation 1, as the automatic one would
    return True
