"""A host profile is rendered with example answers when it is added or replaced, through its
kind's renderer, so a document no host could use is refused then, naming the field, with nothing
stored (cloud-init and preseed here, from ``bootbox_linux``; ESXi's kinds in the esxi plugin's tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

import bootbox_linux
from bootbox import NotFound, ValidationError
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings


@pytest.fixture
def service(tmp_path: Path) -> Iterator[BootService]:
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
    svc = BootService(test_settings(tmp_path), MemoryStore(), Journal(None), pm)
    svc.start()
    try:
        yield svc
    finally:
        svc.close()


GOOD_USER_DATA = "#cloud-config\nhostname: {{ answers.hostname }}\nusers: [{name: ops}]\n"


def _doc(kind: str, templates: dict[str, str]) -> dict[str, Any]:
    return {"name": "p", "kind": kind, "templates": templates,
            "inputs": [{"name": "hostname", "validation": "hostname"}, {"name": "note"}]}


@pytest.mark.parametrize(("kind", "templates", "field", "words"), [
    ("cloud-init", {"user-data": "#cloud-config\nkey: [unclosed {{ answers.hostname }}\n"}, "templates.user-data",
     "invalid YAML"),
    ("cloud-init", {"user-data": GOOD_USER_DATA, "vendor.cfg": "x"}, "templates.vendor.cfg",
     "cloud-init reads only"),
    ("cloud-init", {"user-data": "#cloud-config\nhostname: {{ answers.hostnme }}\n"}, "templates.user-data",
     "no attribute 'hostnme'"),
    ("preseed", {"preseed.cfg": "d-i netcfg/get_hostname string {{ answers.hostname }}\n", "late.sh": "x"},
     "templates.late.sh", "one template, preseed.cfg"),
])
def test_a_profile_no_host_could_use_is_refused_at_add_and_not_stored(
        service: BootService, kind: str, templates: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        service.put_host_profile(_doc(kind, templates), replace_existing=False)
    assert info.value.field == field and words in info.value.message, info.value
    with pytest.raises(NotFound):
        service.hostconfig.profiles.get("p")


def test_a_good_profile_is_taken_and_a_bad_new_version_is_not(service: BootService) -> None:
    doc = _doc("cloud-init", {"user-data": GOOD_USER_DATA + "# {{ attrs.vendor }} {{ answers.note }}\n"})
    assert service.put_host_profile(doc, replace_existing=False).version == 1
    bad = _doc("cloud-init", {"user-data": "#cloud-config\n- a list, not a mapping\n"})
    with pytest.raises(ValidationError, match="must be a mapping"):
        service.put_host_profile(bad, replace_existing=True)
    assert service.hostconfig.profiles.get("p").version == 1
