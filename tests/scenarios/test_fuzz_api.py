"""Fuzzing the API's JSON input through Flask's test client over ``create_app``.

Every POST/PUT/PATCH route under ``/api/v1`` (enumerated from the app, plugins' included) gets
arbitrary bytes, arbitrary JSON values, and near-valid bodies (a valid profile or rule with one
field replaced by anything JSON can hold). Properties: never a 500; every refusal is the one
JSON error shape; afterwards the TinyDB store file reloads and still holds the fixture's
profile, and exactly the profiles and rule sets the API was serving at the end.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bootbox.store.tinydb import TinyDBStore
from tests.support.fuzz_targets import (ApiRig, api_json_target, api_query_target, api_target, check_api_answer,
                                       fuzz_settings)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip

VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/profiles": {"name": "p9", "kind": "linux", "spec": {"kernel": "/bin/sh", "initrd": [], "cmdline": ""},
                         "description": ""},
    "/api/v1/rules": {"name": "r9", "patterns": ["vendor=Dell", "ipv4=10.0.0.0/8"], "items": {"image": "p1"},
                      "all_hosts": False, "at": 0, "activate": True},
    "/api/v1/rules/explain": {"attrs": {"mac": "52:54:00:00:00:01", "vendor": "Dell"}},
    "/api/v1/compliance/repair": {"hosts": ["52:54:00:00:00:01"], "set": "active"},
    "/api/v1/hosts/52:54:00:00:00:01/booted": {"ip": "198.18.0.5", "boot_id": "x", "hostname": "h"},
}  # fmt: skip

REGRESSIONS: list[tuple[str, str, bytes]] = [
    ("POST", "/api/v1/profiles", b'{"name": "p2", "kind": "linux", "spec": {"kernel": "/nonexistent"}}'),
    ("POST", "/api/v1/rules", b'{"name": "r2", "patterns": [1], "items": {"image": "p1"}}'),
    ("POST", "/api/v1/rules", b'{"name": "r2", "items": "image"}'),
    ("POST", "/api/v1/rules/r1/move", b'{"at": true}'),
    ("POST", "/api/v1/rules/explain", b'{"attrs": {"mac": ["a", 1]}}'),
    ("PUT", "/api/v1/rulesets/working", b'{"rules": [{"name": null}]}'),
    # Found by this test: nesting deeper than the JSON parser recurses was a RecursionError and a
    # 500 with a logged traceback (fixed in bootbox/web/__init__.py, _JsonProvider).
    ("POST", "/api/v1/profiles", b'[' * 5000 + b']' * 5000),
    ("POST", "/api/v1/profiles", b'{"name": "\\ud800", "kind": "linux"}'),  # a lone surrogate
    ("POST", "/api/v1/profiles", b'{"name": 1e999, "kind": "linux"}'),
]


def test_api_json_fuzz(tmp_path) -> None:
    rig = ApiRig.start(tmp_path)
    try:
        assert len(rig.writes) >= 10 and ("POST", "/api/v1/profiles") in rig.writes
        for method, path, raw in REGRESSIONS:
            check_api_answer(rig, method, path, rig.call(method, path, raw=raw))

        @fuzz_settings(250)
        @given(st.binary(max_size=200))
        def raw_bodies(data: bytes) -> None:
            api_target(data, rig)

        @fuzz_settings(300)
        @given(value=JSON, which=st.integers(0, 1000))
        def json_values(value: Any, which: int) -> None:
            api_json_target(value, rig, which)

        @fuzz_settings(300)
        @given(path=st.sampled_from(sorted(VALID_BODIES)), field=st.text(max_size=12), value=JSON, drop=st.booleans())
        def near_valid(path: str, field: str, value: Any, drop: bool) -> None:
            body = dict(VALID_BODIES[path])
            key = field if field or not body else sorted(body)[len(field) % len(body)]
            if drop and key in body:
                del body[key]
            else:
                body[key] = value
            check_api_answer(rig, "POST", path, rig.call("POST", path, body))
            for name in ("p9",):  # a profile the fuzz created must be removable again
                rig.call("DELETE", f"/api/v1/profiles/{name}")
            rig.call("DELETE", "/api/v1/rules/r9")

        raw_bodies()
        json_values()
        near_valid()
        listing = rig.client.get("/api/v1/profiles")
        assert listing.status_code == 200 and "p1" in {p["name"] for p in listing.get_json()}
        served_profiles = {p["name"] for p in listing.get_json()}
        served_sets = {which: rig.client.get(f"/api/v1/rulesets/{which}").get_json() for which in ("working", "active")}
        assert rig.client.get("/boot/hosts/52:54:00:00:00:01/script.ipxe").status_code == 200
    finally:
        rig.stop()
    store = TinyDBStore(rig.state)  # what the fuzzing left behind loads, and is what was served
    try:
        assert set(store.all("profiles")) == served_profiles
        stored = store.all("rulesets")
        for which, served in served_sets.items():
            assert [r["name"] for r in stored.get(which, {}).get("rules", [])] == [r["name"] for r in served["rules"]]
    finally:
        store.close()


QUERY_REGRESSIONS = [  # each was a 500 before query arguments were validated like bodies (issue 16)
    ("/api/v1/events", "limit=%C2%B2", "limit"),
    ("/api/v1/events", "limit=10%5E20", "limit"),
    ("/api/v1/events", "limit=100000000000000000000", "limit"),
    ("/api/v1/hosts/52:54:00:00:00:01/events", "limit=%C2%B2", "limit"),
    ("/api/v1/hostprofiles/x", "version=%C2%B2", "version"),
]


def test_api_query_fuzz(tmp_path) -> None:
    """Query strings are input too: every GET route under /api/v1 and /boot gets arbitrary ones
    (real argument names with any value, and unknown names); never a 500, and a bad value of a
    known argument is a 422 naming it."""
    rig = ApiRig.start(tmp_path)
    try:
        assert "/api/v1/events" in rig.reads and any(p.startswith("/boot/") for p in rig.reads)
        for path, query, field in QUERY_REGRESSIONS:
            response = rig.client.get(f"{path}?{query}", headers={"Authorization": f"Bearer {rig.token}"})
            assert response.status_code == 422, (path, query, response.status_code)
            assert response.get_json()["error"]["field"] == field

        @fuzz_settings(300)
        @given(st.binary(max_size=80))
        def queries(data: bytes) -> None:
            api_query_target(data, rig)

        queries()
    finally:
        rig.stop()
