"""The Store contract, run against every implementation: the twin must behave like the real store."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bootbox.errors import BootboxError, NotFound, ValidationError
from bootbox.store import MemoryStore, Store, TinyDBStore
from bootbox.store.postgresql import PostgreSQLStore
from tests.support.postgres import postgres_server  # noqa: F401  (the session's PostgreSQL)


@pytest.fixture(params=["memory", "tinydb", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """A factory, so a test can close and use a store it made; every store is closed afterwards.

    The PostgreSQL stores of one test share one fresh schema, as TinyDB stores share one file.
    """
    made: list[Store] = []
    dsn = request.getfixturevalue("postgres_server").dsn() if request.param == "postgresql" else ""

    def make() -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore()
        elif request.param == "tinydb":
            store = TinyDBStore(tmp_path / "state")
        else:
            store = PostgreSQLStore(dsn, state_dir=tmp_path / "state")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    return make_store()


class Unserialisable:
    pass


# -- reading and writing ---------------------------------------------------------------------


def test_the_implementation_has_every_method_of_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_put_then_get_returns_the_document(store: Store) -> None:
    store.put("hosts", "aa:bb", {"mac": "aa:bb", "attrs": {"vendor": "Dell"}, "n": 3, "ok": True, "x": None})
    assert store.get("hosts", "aa:bb") == {"mac": "aa:bb", "attrs": {"vendor": "Dell"}, "n": 3, "ok": True, "x": None}


def test_put_replaces_and_never_merges(store: Store) -> None:
    store.put("hosts", "k", {"a": 1, "b": 2})
    store.put("hosts", "k", {"a": 3})
    assert store.get("hosts", "k") == {"a": 3}


def test_get_of_a_missing_document_raises_not_found_with_table_and_key(store: Store) -> None:
    store.put("hosts", "present", {})
    with pytest.raises(NotFound, match=r"^hosts 'absent' not found$"):
        store.get("hosts", "absent")
    with pytest.raises(NotFound, match=r"^nosuchtable 'k' not found$"):
        store.get("nosuchtable", "k")


def test_has(store: Store) -> None:
    store.put("hosts", "k", {})
    assert store.has("hosts", "k")
    assert not store.has("hosts", "other")
    assert not store.has("profiles", "k")


def test_delete_removes_only_that_document(store: Store) -> None:
    store.put("hosts", "a", {"n": 1})
    store.put("hosts", "b", {"n": 2})
    store.delete("hosts", "a")
    assert not store.has("hosts", "a")
    assert store.all("hosts") == {"b": {"n": 2}}


def test_delete_of_a_missing_document_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r"hosts 'a' not found"):
        store.delete("hosts", "a")
    store.put("hosts", "a", {})
    store.delete("hosts", "a")
    with pytest.raises(NotFound):
        store.delete("hosts", "a")


def test_all_maps_keys_to_documents_per_table(store: Store) -> None:
    store.put("hosts", "h1", {"n": 1})
    store.put("hosts", "h2", {"n": 2})
    store.put("profiles", "h1", {"kind": "linux"})
    assert store.all("hosts") == {"h1": {"n": 1}, "h2": {"n": 2}}
    assert store.all("profiles") == {"h1": {"kind": "linux"}}
    assert store.all("rules") == {}


def test_unicode_and_odd_keys_round_trip(store: Store) -> None:
    keys = ["aa:bb:cc:dd:ee:ff", "a/b\\c", " spaced ", "ünïcødé-名前", "1", "\n"]
    for key in keys:
        store.put("things", key, {"key": key, "text": "é\u2603\U0001f600"})
    assert {k: d["key"] for k, d in store.all("things").items()} == {k: k for k in keys}
    assert store.get("things", "ünïcødé-名前")["text"] == "é\u2603\U0001f600"


def test_put_many_writes_every_document_and_replaces_existing_ones(store: Store) -> None:
    store.put("hosts", "a", {"old": True, "extra": 1})
    store.put_many("hosts", {"a": {"new": 1}, "b": {"new": 2}})
    assert store.all("hosts") == {"a": {"new": 1}, "b": {"new": 2}}


def test_put_many_with_nothing_is_a_no_op(store: Store) -> None:
    store.put_many("hosts", {})
    assert store.all("hosts") == {}


# -- copies --------------------------------------------------------------------------------


def test_mutating_a_returned_document_does_not_change_the_store(store: Store) -> None:
    store.put("hosts", "k", {"attrs": {"vendor": "Dell"}, "tags": ["a"]})
    got = store.get("hosts", "k")
    got["attrs"]["vendor"] = "HP"
    got["tags"].append("b")
    everything = store.all("hosts")
    everything["k"]["attrs"]["vendor"] = "Lenovo"
    everything["k2"] = {}
    assert store.get("hosts", "k") == {"attrs": {"vendor": "Dell"}, "tags": ["a"]}
    assert not store.has("hosts", "k2")


def test_mutating_the_document_after_put_does_not_change_the_store(store: Store) -> None:
    doc = {"attrs": {"vendor": "Dell"}, "tags": ["a"]}
    store.put("hosts", "k", doc)
    doc["attrs"]["vendor"] = "HP"
    doc["tags"].append("b")
    many = {"m": {"nested": {"v": 1}}}
    store.put_many("hosts", many)
    many["m"]["nested"]["v"] = 2
    assert store.get("hosts", "k") == {"attrs": {"vendor": "Dell"}, "tags": ["a"]}
    assert store.get("hosts", "m") == {"nested": {"v": 1}}


def test_documents_come_back_as_json_gives_them(store: Store) -> None:
    store.put("hosts", "k", {"pair": (1, 2), "nested": {"t": ("x",)}})
    assert store.get("hosts", "k") == {"pair": [1, 2], "nested": {"t": ["x"]}}


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"bad": Unserialisable()},
        {"bad": {1, 2}},
        {"bad": b"bytes"},
        {"bad": math.nan},
        {"bad": math.inf},
        ["not", "a", "mapping"],
        "text",
        None,
    ],
    ids=["object", "set", "bytes", "nan", "inf", "list", "str", "none"],
)
def test_a_document_that_is_not_a_json_object_is_refused_before_anything_is_written(store: Store, doc: object) -> None:
    store.put("hosts", "k", {"kept": True})
    with pytest.raises(ValidationError) as raised:
        store.put("hosts", "k", doc)  # type: ignore[arg-type]
    assert raised.value.field == "document"
    with pytest.raises(ValidationError):
        store.put_many("hosts", {"new": {"fine": 1}, "k": doc})  # type: ignore[dict-item]
    assert store.all("hosts") == {"k": {"kept": True}}


def test_a_self_referencing_document_is_refused(store: Store) -> None:
    doc: dict[str, object] = {}
    doc["me"] = doc
    with pytest.raises(ValidationError):
        store.put("hosts", "k", doc)
    assert not store.has("hosts", "k")


@pytest.mark.parametrize("table", ["", "Hosts", "1hosts", "_hosts", "host-s", "hosts ", "hôsts", None, 3])
def test_bad_table_names_are_refused_everywhere(store: Store, table: object) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.get(table, "k"),  # type: ignore[arg-type]
        lambda: store.has(table, "k"),  # type: ignore[arg-type]
        lambda: store.put(table, "k", {}),  # type: ignore[arg-type]
        lambda: store.put_many(table, {"k": {}}),  # type: ignore[arg-type]
        lambda: store.delete(table, "k"),  # type: ignore[arg-type]
        lambda: store.all(table),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ValidationError) as raised:
            call()
        assert raised.value.field == "table"


@pytest.mark.parametrize("table", ["h", "hosts", "rule_sets", "t2_x9"])
def test_good_table_names_are_accepted(store: Store, table: str) -> None:
    store.put(table, "k", {"ok": 1})
    assert store.get(table, "k") == {"ok": 1}


@pytest.mark.parametrize("key", ["", None, 5, b"k"])
def test_bad_keys_are_refused_everywhere(store: Store, key: object) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.get("hosts", key),  # type: ignore[arg-type]
        lambda: store.has("hosts", key),  # type: ignore[arg-type]
        lambda: store.put("hosts", key, {}),  # type: ignore[arg-type]
        lambda: store.put_many("hosts", {key: {}}),  # type: ignore[dict-item]
        lambda: store.delete("hosts", key),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ValidationError) as raised:
            call()
        assert raised.value.field == "key"
    assert store.all("hosts") == {}


# -- batches -------------------------------------------------------------------------------


def test_writes_in_a_batch_are_visible_inside_and_after_it(store: Store) -> None:
    with store.batch():
        store.put("hosts", "a", {"n": 1})
        assert store.get("hosts", "a") == {"n": 1}
        store.put_many("hosts", {"b": {"n": 2}})
        store.delete("hosts", "a")
    assert store.all("hosts") == {"b": {"n": 2}}


def test_an_exception_in_a_batch_undoes_all_of_its_writes(store: Store) -> None:
    store.put("hosts", "keep", {"v": 1})
    store.put("hosts", "gone", {"v": 2})
    with pytest.raises(RuntimeError, match="boom"):
        with store.batch():
            store.put("hosts", "keep", {"v": 100})
            store.put("hosts", "new", {"v": 3})
            store.delete("hosts", "gone")
            store.put_many("profiles", {"p": {}})
            raise RuntimeError("boom")
    assert store.all("hosts") == {"keep": {"v": 1}, "gone": {"v": 2}}
    assert store.all("profiles") == {}


def test_a_failed_write_inside_a_batch_can_be_caught_and_the_batch_goes_on(store: Store) -> None:
    with store.batch():
        store.put("hosts", "a", {"n": 1})
        with pytest.raises(NotFound):
            store.delete("hosts", "missing")
        with pytest.raises(ValidationError):
            store.put("hosts", "b", {"bad": Unserialisable()})
        store.put("hosts", "c", {"n": 3})
    assert store.all("hosts") == {"a": {"n": 1}, "c": {"n": 3}}


def test_a_nested_batch_joins_the_outer_one(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.batch():
            store.put("hosts", "outer", {})
            with store.batch():
                store.put("hosts", "inner", {})
            assert store.has("hosts", "inner")
            raise RuntimeError("outer fails after the inner batch finished")
    assert store.all("hosts") == {}


def test_a_failing_nested_batch_undoes_only_its_own_writes(store: Store) -> None:
    store.put("hosts", "before", {"v": 0})
    with store.batch():
        store.put("hosts", "outer", {"v": 1})
        with pytest.raises(RuntimeError):
            with store.batch():
                store.put("hosts", "inner", {"v": 2})
                store.put("hosts", "before", {"v": 99})
                store.delete("hosts", "outer")
                raise RuntimeError("inner fails")
        store.put("hosts", "after", {"v": 3})
    assert store.all("hosts") == {"before": {"v": 0}, "outer": {"v": 1}, "after": {"v": 3}}


def test_other_threads_do_not_see_or_join_an_open_batch(store: Store) -> None:
    inside = threading.Event()
    seen: list[bool] = []

    def other() -> None:
        inside.wait()
        seen.append(store.has("hosts", "a"))  # blocks until the batch is over
        store.put("hosts", "from_other", {})

    worker = threading.Thread(target=other)
    worker.start()
    with pytest.raises(RuntimeError):
        with store.batch():
            store.put("hosts", "a", {})
            inside.set()
            worker.join(0.2)  # gives the other thread every chance to slip in
            raise RuntimeError("roll back")
    worker.join()
    assert seen == [False]
    assert store.all("hosts") == {"from_other": {}}


# -- threads and lifetime ------------------------------------------------------------------


def test_eight_threads_putting_at_once_lose_nothing(store: Store) -> None:
    """(test_store_tinydb.py repeats this at 8 x 500 and checks the file after reopening.)"""

    def writer(n: int) -> None:
        for i in range(100):
            store.put("hosts", f"t{n}-{i}", {"thread": n, "i": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    docs = store.all("hosts")
    assert len(docs) == 800
    assert docs["t7-99"] == {"thread": 7, "i": 99}


def test_close_is_idempotent_and_the_store_refuses_use_afterwards(make_store: Callable[[], Store]) -> None:
    store = make_store()
    store.put("hosts", "k", {})
    store.close()
    store.close()
    for call in (
        lambda: store.get("hosts", "k"),
        lambda: store.has("hosts", "k"),
        lambda: store.put("hosts", "k", {}),
        lambda: store.put_many("hosts", {"k": {}}),
        lambda: store.delete("hosts", "k"),
        lambda: store.all("hosts"),
        lambda: store.batch().__enter__(),
    ):
        with pytest.raises(BootboxError, match="closed"):
            call()


def test_close_inside_a_batch_is_refused_and_the_batch_still_lands(store: Store) -> None:
    with store.batch():
        store.put("hosts", "k", {})
        with pytest.raises(BootboxError, match="inside batch"):
            store.close()
    assert store.has("hosts", "k")
