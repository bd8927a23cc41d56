"""Host profiles and answers in the store: the ``hostprofiles`` and ``answers`` tables.

A host profile is replaced, never edited: every ``put`` of an existing name is a new version
(the old one stays readable in ``hostprofile_versions``), so an answer file can always say
which version it came from. Answers are one document per host, keyed by MAC, written through
before the call returns. Secret values (by the schema that applies when they are set) are
stored only encrypted (:mod:`bootbox.store.secretbox`); everything that leaves this module for an
operator is masked by :meth:`AnswerBook.masked`.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from bootbox.errors import Conflict, NotFound, ValidationError
from bootbox.core.hostprofile import HostProfile, InputSpec, check_value, host_profile_from_dict, parse_host_profile
from bootbox.model import normalize_mac
from bootbox.store.records import load_records
from bootbox.store.secretbox import MASK, SecretBox, is_encrypted
from bootbox.store import Store

HOSTPROFILES_TABLE = "hostprofiles"
VERSIONS_TABLE = "hostprofile_versions"
ANSWERS_TABLE = "answers"
MAX_IMPORT_ROWS = 10_000


class HostProfileBook:
    """The current version of each host profile, cached in memory, written through to the store."""

    def __init__(self, store: Store, *, kinds: Callable[[], Mapping[str, Sequence[str]]],
                 reserved: Callable[[], Mapping[str, str]],
                 check: Callable[[HostProfile], None] | None = None) -> None:
        self._store = store
        self._kinds = kinds
        self._reserved = reserved
        self._check = check
        """Renders a new version with example answers (``HostConfig.check_profile``) before it is stored."""
        self._lock = threading.Lock()
        self._profiles = load_records(store, HOSTPROFILES_TABLE, host_profile_from_dict)  # wrong shapes kept aside

    def all(self) -> list[HostProfile]:
        with self._lock:
            return sorted(self._profiles.values(), key=lambda p: p.name)

    def get(self, name: str, version: int | None = None) -> HostProfile:
        with self._lock:
            current = self._profiles.get(name)
        if current is None:
            raise NotFound(f"host profile {name!r} does not exist")
        if version is None or version == current.version:
            return current
        key = f"{name}@{version}"
        if not self._store.has(VERSIONS_TABLE, key):
            raise NotFound(f"host profile {name!r} has no version {version} (current: {current.version})")
        return host_profile_from_dict(self._store.get(VERSIONS_TABLE, key))

    def get_or_none(self, name: str) -> HostProfile | None:
        with self._lock:
            return self._profiles.get(name)

    def put(self, doc: Mapping[str, Any], *, replace_existing: bool) -> HostProfile:
        """Validate and store; an existing name needs ``replace_existing`` and gets version + 1."""
        with self._lock:
            name = doc.get("name") if isinstance(doc, Mapping) else None
            old = self._profiles.get(name) if isinstance(name, str) else None
            if old is not None and not replace_existing:
                raise Conflict(f"host profile {name!r} already exists (replace it to make version {old.version + 1})")
            if old is None and replace_existing:
                raise NotFound(f"host profile {name!r} does not exist")
            body = {k: v for k, v in doc.items() if k != "version"}
            profile = parse_host_profile(body, kinds=self._kinds(), version=(old.version + 1) if old else 1,
                                         reserved=self._reserved())
            if self._check is not None:
                self._check(profile)  # raises ValidationError naming the field; nothing is stored then
            with self._store.batch():
                self._store.put(HOSTPROFILES_TABLE, profile.name, profile.to_dict())
                self._store.put(VERSIONS_TABLE, f"{profile.name}@{profile.version}", profile.to_dict())
            self._profiles[profile.name] = profile
            return profile

    def delete(self, name: str) -> None:
        with self._lock:
            if name not in self._profiles:
                raise NotFound(f"host profile {name!r} does not exist")
            self._store.delete(HOSTPROFILES_TABLE, name)
            del self._profiles[name]


class AnswerBook:
    """Each host's answers: ``set``/``unset``/``import_csv`` validate against the schema that
    applies to the host, encrypt secrets, and write through."""

    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box
        self._lock = threading.Lock()

    def _doc(self, mac: str) -> dict[str, Any]:
        if self._store.has(ANSWERS_TABLE, mac):
            return self._store.get(ANSWERS_TABLE, mac)
        return {"mac": mac, "values": {}, "updated": 0.0}

    def stored(self, mac: str) -> dict[str, Any]:
        """The host's answers as stored (secret values still encrypted)."""
        return dict(self._doc(normalize_mac(mac))["values"])

    def values(self, mac: str) -> dict[str, Any]:
        """The host's answers in clear: for rendering and for plugins' pushes, never for display."""
        return {key: self._box.decrypt(value) if is_encrypted(value) else value
                for key, value in self.stored(mac).items()}

    def masked(self, mac: str, schema: Sequence[InputSpec]) -> dict[str, Any]:
        """The host's answers for display: secret ones (stored encrypted or declared secret) masked."""
        secret = {spec.name for spec in schema if spec.is_secret}
        return {key: MASK if is_encrypted(value) or key in secret else value for key, value in self.stored(mac).items()}

    def prepare(self, values: Mapping[str, Any], known: Mapping[str, InputSpec], where: str = "") -> dict[str, Any]:
        """Validate ``values`` against ``known`` inputs and encrypt the secret ones."""
        if not isinstance(values, Mapping) or not values:
            raise ValidationError(where or "values", "expected at least one key=value")
        prepared: dict[str, Any] = {}
        for key, value in values.items():
            field_name = f"{where}{key}"
            spec = known.get(key)
            if spec is None:
                asks = ", ".join(sorted(known)) or "nothing (no host profile or plugin declares an input)"
                raise ValidationError(field_name, f"not an input this host is asked for; inputs: {asks}")
            checked = check_value(spec, value, field_name)
            prepared[key] = self._box.encrypt(str(checked)) if spec.is_secret else checked
        return prepared

    def set(self, mac: str, values: Mapping[str, Any], known: Mapping[str, InputSpec]) -> dict[str, Any]:
        """Set some answers of one host (others are kept); returns the stored values."""
        mac = normalize_mac(mac)
        prepared = self.prepare(values, known)
        with self._lock:
            doc = self._doc(mac)
            doc["values"].update(prepared)
            doc["updated"] = time.time()
            self._store.put(ANSWERS_TABLE, mac, doc)
            return dict(doc["values"])

    def unset(self, mac: str, keys: Sequence[str]) -> None:
        mac = normalize_mac(mac)
        with self._lock:
            doc = self._doc(mac)
            missing = [key for key in keys if key not in doc["values"]]
            if missing:
                raise NotFound(f"host {mac} has no answer {missing[0]!r}")
            for key in keys:
                del doc["values"][key]
            doc["updated"] = time.time()
            self._store.put(ANSWERS_TABLE, mac, doc)

    def delete_host(self, mac: str) -> None:
        mac = normalize_mac(mac)
        with self._lock:
            if self._store.has(ANSWERS_TABLE, mac):
                self._store.delete(ANSWERS_TABLE, mac)

    def import_csv(self, text: str, known_for: Callable[[str], Mapping[str, InputSpec]]) -> list[str]:
        """Set answers for many hosts from CSV (a ``mac`` column, one column per input; empty
        cells are left alone). Every row is validated before anything is written, in one atomic
        write, so a bad cell changes nothing. Returns the MACs written."""
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "mac" not in [f.strip().lower() for f in reader.fieldnames]:
            raise ValidationError("csv", "the first row must name the columns, one of them 'mac'")
        staged: dict[str, dict[str, Any]] = {}
        for number, row in enumerate(reader, start=2):
            if number - 1 > MAX_IMPORT_ROWS:
                raise ValidationError("csv", f"more than {MAX_IMPORT_ROWS} rows; split the file")
            if None in row:
                raise ValidationError(f"row {number}", "more cells than column names")
            cells = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            raw_mac = cells.pop("mac", "") or cells.pop("MAC", "")
            mac = normalize_mac(raw_mac, f"row {number}: mac")
            values = {k: v for k, v in cells.items() if v != "" and k.lower() != "mac"}
            if not values:
                continue
            prepared = self.prepare(values, known_for(mac), f"row {number}: ")
            staged.setdefault(mac, {}).update(prepared)
        with self._lock:
            docs = {}
            for mac, values in staged.items():
                doc = self._doc(mac)
                doc["values"].update(values)
                doc["updated"] = time.time()
                docs[mac] = doc
            if docs:
                self._store.put_many(ANSWERS_TABLE, docs)
        return sorted(staged)
