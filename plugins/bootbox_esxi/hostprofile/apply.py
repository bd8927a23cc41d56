"""One round against one host: read, diff, apply each change, read back, say what happened.

:func:`check` is compliance (the diff alone); :func:`apply` writes every change that does not
comply, then reads the host again and diffs once more, so each setting ends as ``changed``
(written and read back as wanted), ``complied`` (nothing to do) or ``failed`` (the host's fault,
or a read-back that still differs). A ``RestrictedVersion`` fault means the host's licence makes
its whole API read-only (free vSphere Hypervisor): the round stops writing at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pyVmomi import vmodl

from bootbox_esxi.hostprofile.diff import Change, diff
from bootbox_esxi.hostprofile.model import HostConfig
from bootbox_esxi.hostprofile.vsphere import Session, apply_change, fault_text, is_restricted, read

CHANGED, COMPLIED, FAILED, SKIPPED = "changed", "complied", "failed", "skipped"


@dataclass(frozen=True)
class Outcome:
    """What happened to one setting."""

    key: str
    result: str
    want: str
    have: str
    fault: str = ""

    def to_dict(self) -> dict[str, str]:
        doc = {"setting": self.key, "result": self.result, "want": self.want, "have": self.have}
        if self.fault:
            doc["fault"] = self.fault
        return doc

    def line(self) -> str:
        if self.result == FAILED:
            return f"{self.key} failed: {self.fault}"
        if self.result == CHANGED:
            return f"{self.key} changed: {self.have} → {self.want}"
        return f"{self.key} {self.result} ({self.want})"


@dataclass
class Report:
    """A round's outcome per setting, plus how bootbox got in and which boot it saw."""

    outcomes: list[Outcome] = field(default_factory=list)
    login: str = ""
    boot_time: str = ""
    restricted: bool = False

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result in (FAILED, SKIPPED)]

    def summary(self) -> str:
        return (f"{len(self.outcomes)} settings: {self.count(CHANGED)} changed, {self.count(COMPLIED)} complied, "
                f"{self.count(FAILED)} failed" + (f", {self.count(SKIPPED)} skipped" if self.count(SKIPPED) else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"login": self.login, "boot_time": self.boot_time, "restricted": self.restricted,
                "summary": self.summary(), "settings": [o.to_dict() for o in self.outcomes]}


def check(session: Session, want: HostConfig) -> list[Change]:
    """Compliance: the diff of the host's live state against ``want``, nothing written."""
    return diff(want, read(session, want.advanced.keys()))


def apply(session: Session, want: HostConfig, verify_root: Callable[[str], bool]) -> Report:
    """Apply ``want`` to the host; ``verify_root(password)`` logs in afresh to read the root
    password back (the API cannot read a password)."""
    report = Report(login=session.password_label, boot_time=session.boot_time)
    have = read(session, want.advanced.keys())
    changes = diff(want, have)
    faults: dict[str, str] = {}
    for change in changes:
        if change.complies:
            continue
        if report.restricted:
            faults[change.key] = "not attempted: the host's API is read-only (RestrictedVersion)"
            continue
        try:
            apply_change(session, change, have)
        except vmodl.MethodFault as exc:
            faults[change.key] = fault_text(exc)
            report.restricted = is_restricted(exc)
    after = read(session, want.advanced.keys())
    if want.root_password is not None and "root_password" not in faults and after.root_password != want.root_password:
        if verify_root(want.root_password):
            after = _with_root(after, want.root_password)
    final = {c.key: c for c in diff(want, after)}
    for change in changes:
        again = final[change.key]
        if change.complies:
            report.outcomes.append(Outcome(change.key, COMPLIED, change.want, change.have))
        elif change.key in faults:
            result = SKIPPED if faults[change.key].startswith("not attempted") else FAILED
            report.outcomes.append(Outcome(change.key, result, change.want, change.have, faults[change.key]))
        elif again.complies:
            report.outcomes.append(Outcome(change.key, CHANGED, change.want, change.have))
        else:
            report.outcomes.append(Outcome(change.key, FAILED, change.want, again.have,
                                           f"written, but read back as {again.have}"))
    return report


def _with_root(config: HostConfig, password: str) -> HostConfig:
    return replace(config, root_password=password)
