"""Acceptance levels and VIB version ordering: the two orders Image Builder's rules rest on.

Acceptance levels are ordered VMwareCertified > VMwareAccepted > PartnerSupported >
CommunitySupported (facts §5). Descriptors spell them ``certified``/``accepted``/``partner``/
``community``; PowerCLI and operators use the long names; both are accepted everywhere and the
descriptor spelling is what bootbox stores.

VIB versions look like ``7.0.3-0.0.19193900`` (version ``-`` release). They are compared part by
part, digits numerically and everything else as text, the way Debian and VMware order them, so
``7.0.10`` is newer than ``7.0.9``. A constraint without a release (``>= 7.0.3``) ignores the
release of the version it is compared with.
"""

from __future__ import annotations

import re

from bootbox import ValidationError

LEVELS: tuple[str, ...] = ("community", "partner", "accepted", "certified")
"""Lowest first: ``rank(level)`` is the index."""

LONG_NAMES: dict[str, str] = {
    "community": "CommunitySupported",
    "partner": "PartnerSupported",
    "accepted": "VMwareAccepted",
    "certified": "VMwareCertified",
}

_ALIASES: dict[str, str] = {
    **{level: level for level in LEVELS},
    **{name.lower(): level for level, name in LONG_NAMES.items()},
    "communitysupport": "community",
    "partnersupport": "partner",
}

RELATIONS = ("<<", "<=", "=", ">=", ">>")


def normalize_level(value: object, field: str = "acceptance") -> str:
    """``"PartnerSupported"`` / ``"partner"`` → ``"partner"``, or a ValidationError naming ``field``."""
    key = str(value or "").strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    if key not in _ALIASES:
        known = ", ".join(LONG_NAMES[level] for level in reversed(LEVELS))
        raise ValidationError(field, f"{value!r} is not an acceptance level; use one of {known}")
    return _ALIASES[key]


def rank(level: str) -> int:
    """Position of a normalised level: community 0 … certified 3."""
    return LEVELS.index(level)


def long_name(level: str) -> str:
    return LONG_NAMES.get(level, level)


_PART = re.compile(r"(\d+|[A-Za-z]+|[^A-Za-z\d]+)")


def _key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of one dotted version string: numbers numerically, words as text, separators ignored."""
    key: list[tuple[int, int | str]] = []
    for part in _PART.findall(text):
        if part.isdigit():
            key.append((1, int(part)))
        elif part.isalpha():
            key.append((0, part.lower()))
    return tuple(key)


def split(version: str) -> tuple[str, str | None]:
    """``7.0.3-0.0.1`` → ``("7.0.3", "0.0.1")``; no ``-`` → release None."""
    if "-" in version:
        head, _, release = version.partition("-")
        return head, release
    return version, None


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older, equal or newer than ``b``.

    If either side has no release part, releases are not compared (a constraint ``>= 7.0.3``
    is met by every ``7.0.3-x``).
    """
    va, ra = split(a)
    vb, rb = split(b)
    left, right = _key(va), _key(vb)
    if left != right:
        return -1 if left < right else 1
    if ra is None or rb is None:
        return 0
    left, right = _key(ra), _key(rb)
    if left != right:
        return -1 if left < right else 1
    return 0


def satisfies(version: str | None, relation: str, wanted: str) -> bool:
    """Does ``version`` meet ``relation wanted``? An empty relation accepts any version.

    A provider without a version meets only unversioned constraints.
    """
    if not relation or not wanted:
        return True
    if version is None or version == "":
        return False
    order = compare(version, wanted)
    return {
        "<<": order < 0,
        "<=": order <= 0,
        "=": order == 0,
        ">=": order >= 0,
        ">>": order > 0,
    }.get(relation, False)
