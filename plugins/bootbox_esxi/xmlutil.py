"""Parsing depot XML (descriptors, indexes, metadata) safely and tolerantly.

Depot files come from the network or from zips of unknown origin, so parsing refuses what could
hurt the appliance and tolerates what only differs from the textbook:

* DTDs are refused outright: no depot file needs one, and entity declarations are how an XML
  file turns a few bytes into gigabytes ("billion laughs") or reads local files;
* every document has a size limit checked before parsing;
* element names are matched case-insensitively and without namespaces, because VMware's own
  files spell the same element ``vibList``/``viblist``/``vibID``/``vibid`` in different places;
* unknown elements are ignored, so a newer depot with extra metadata still imports.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Iterator

from bootbox import BootboxError

_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class DepotError(BootboxError):
    """A depot, bundle or VIB was refused; the message names the file and what to do."""


def parse_xml(data: bytes, what: str, limit: int) -> ET.Element:
    """Parse ``data`` (named ``what`` in errors) after checking its size and refusing DTDs."""
    if len(data) > limit:
        raise DepotError(f"{what} is {len(data)} bytes, more than the {limit}-byte limit for XML files")
    if _DTD.search(data):
        raise DepotError(f"{what} declares a DTD or entities; depot XML never needs them, refusing")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DepotError(f"{what} is not well-formed XML: {exc}") from None


def local(tag: object) -> str:
    """``{namespace}vibList`` → ``viblist``: the name used for matching."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1].lower()


def children(elem: ET.Element | None, name: str) -> Iterator[ET.Element]:
    """Direct children named ``name`` (any case, any namespace)."""
    if elem is None:
        return iter(())
    wanted = name.lower()
    return (child for child in elem if local(child.tag) == wanted)


def child(elem: ET.Element | None, *names: str) -> ET.Element | None:
    """The first direct child with any of ``names``, or None."""
    for name in names:
        for found in children(elem, name):
            return found
    return None


def text(elem: ET.Element | None, *names: str, default: str = "") -> str:
    """Stripped text of the first child named in ``names`` (or of ``elem`` itself if none given)."""
    target = child(elem, *names) if names else elem
    if target is None or target.text is None:
        return default
    return target.text.strip()


def descendants(elem: ET.Element, name: str) -> Iterator[ET.Element]:
    """Every element below ``elem`` named ``name`` (any depth, any case)."""
    wanted = name.lower()
    return (node for node in elem.iter() if local(node.tag) == wanted)


def attr(elem: ET.Element, name: str, default: str = "") -> str:
    """An attribute by case-insensitive name."""
    wanted = name.lower()
    for key, value in elem.attrib.items():
        if local(key) == wanted:
            return value.strip()
    return default


def flag(elem: ET.Element | None, name: str) -> bool:
    """A ``<name>true</name>`` child as a bool (absent or anything else is False)."""
    return text(elem, name).lower() in ("true", "1", "yes")


def to_bytes(elem: ET.Element) -> bytes:
    """Serialise an element (used when we write our own XML)."""
    return ET.tostring(elem, encoding="utf-8")
