"""Image Builder's rules over ``esxi`` specs, and the add/remove/diff operations built on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootbox import PluginStore, ValidationError
from bootbox.store.memory import MemoryStore
from bootbox_esxi import versions
from bootbox_esxi.catalog import BlobStore, Catalog
from bootbox_esxi.depot import Importer, Limits
from bootbox_esxi.image import allocate_modules
from bootbox_esxi.imageprofile import add_vib, check, diff, normalize_spec, remove_vib
from bootbox_esxi.tests.esxi_builder import PayloadSpec, VibSpec, build_vib, driver, esx_base
from tests.support.lab_fixtures import lab_unavailable

SHARED_VIB = Path("/work/shared/data/esxi/ghettoVCB-1.0.0-0.0.0-2020-12-29.vib")

BASE = esx_base("7.0.3-0.0.1")
BASE_NEW = esx_base("7.0.3-0.10.2")
NET = driver("net-a", depends=[("esx-base", ">=", "7.0.0")])
API_USER = driver("api-user", depends=[("vmkapi_2_9_0_0", "", "")])
OLD_BASE_USER = driver("old-user", depends=[("esx-base", "<<", "7.0.0")])
COMMUNITY = driver("tool-c", acceptance="community")
NOT_STATELESS = driver("agent-x", stateless=False)
CONFLICTING = driver("net-evil", conflicts=[("net-a", "", "")])
REPLACER = driver("net-a2", replaces=[("net-a", "", "")])
CLASH_1 = VibSpec("clash-one", payloads=[PayloadSpec("one", "vgz", b"1", vfatname="same.v00")])
CLASH_2 = VibSpec("clash-two", payloads=[PayloadSpec("two", "vgz", b"2", vfatname="same.v00")])
RESERVED = VibSpec("sneaky", payloads=[PayloadSpec("db", "tgz", b"x", vfatname="imgdb.tgz")])
RESERVED_CALLIN = VibSpec("sneaky-callin", payloads=[PayloadSpec("callin", "tgz", b"x", vfatname="BBCallin.tgz")])
SAME_NAME_1 = VibSpec("drv-one", payloads=[PayloadSpec("payload1", "vgz", b"a")])
SAME_NAME_2 = VibSpec("drv-two", payloads=[PayloadSpec("payload1", "vgz", b"b")])
ALL = [BASE, BASE_NEW, NET, API_USER, OLD_BASE_USER, COMMUNITY, NOT_STATELESS, CONFLICTING, REPLACER, CLASH_1,
       CLASH_2, RESERVED, RESERVED_CALLIN, SAME_NAME_1, SAME_NAME_2]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("esxi-rules")
    loose = root / "vibs"
    loose.mkdir()
    for spec in ALL:
        (loose / f"{spec.name}-{spec.version}.vib").write_bytes(build_vib(spec))
    if SHARED_VIB.is_file():
        shutil.copyfile(SHARED_VIB, loose / SHARED_VIB.name)
    cat = Catalog(PluginStore(MemoryStore(), "esxi"), BlobStore(root / "state"))
    Importer(cat, Limits()).run(str(loose))
    return cat


def _spec(catalog: Catalog, *vibs: VibSpec | str, **extra: object) -> dict:  # type: ignore[type-arg]
    ids = [v if isinstance(v, str) else v.id for v in vibs]
    return normalize_spec({"vibs": ids, **extra}, catalog, "partner")


def _refused(catalog: Catalog, message: str, *vibs: VibSpec | str, **extra: object) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(catalog, *vibs, **extra)


# ------------------------------------------------------------------------------- orders


def test_acceptance_levels_are_ordered_and_spelled_both_ways() -> None:
    assert [versions.normalize_level(x) for x in ("VMwareCertified", "VMwareAccepted", "PartnerSupported",
                                                  "CommunitySupported", "partner", "COMMUNITY")] == [
        "certified", "accepted", "partner", "community", "partner", "community"]
    ranks = [versions.rank(level) for level in ("certified", "accepted", "partner", "community")]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == 4
    with pytest.raises(ValidationError, match="VMwareCertified, VMwareAccepted, PartnerSupported, CommunitySupported"):
        versions.normalize_level("gold")


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [("7.0.3-0.0.1", "7.0.3-0.0.1", 0), ("7.0.10-0.0.1", "7.0.9-0.0.1", 1), ("7.0.3-0.10.2", "7.0.3-0.9.9", 1),
     ("6.7.0-2.48.13006603", "7.0.0-1.0.1", -1), ("7.0.3", "7.0.3-0.0.1", 0), ("1.0.0a-1", "1.0.0-1", 1)],
)
def test_versions_compare_part_by_part(a: str, b: str, order: int) -> None:
    assert versions.compare(a, b) == order
    assert versions.compare(b, a) == -order


def test_relations() -> None:
    assert versions.satisfies("7.0.3-0.0.1", ">=", "7.0.0")
    assert not versions.satisfies("6.7.0-1", ">=", "7.0.0")
    assert versions.satisfies("6.7.0-1", "<<", "7.0.0")
    assert versions.satisfies(None, "", "")
    assert not versions.satisfies(None, ">=", "1.0")


# ------------------------------------------------------------------------------- the rules


def test_a_valid_profile_normalises_names_to_ids(catalog: Catalog) -> None:
    spec = normalize_spec({"vibs": ["esx-base", NET.id]}, catalog, "partner")
    assert spec["vibs"] == [BASE_NEW.id, NET.id]  # a name resolves to the newest imported version
    assert spec["acceptance"] == "partner" and spec["mode"] == "stateless" and spec["vendor"] == "bootbox"


def test_a_vib_below_the_profile_level_is_refused_until_the_level_is_lowered(catalog: Catalog) -> None:
    _refused(catalog, "CommunitySupported, below the profile's PartnerSupported; lower the profile's acceptance",
             BASE, COMMUNITY)
    assert _spec(catalog, BASE, COMMUNITY, acceptance="CommunitySupported")["acceptance"] == "community"
    _refused(catalog, "below the profile's VMwareCertified", BASE, NET, acceptance="certified")


def test_one_version_per_vib_name(catalog: Catalog) -> None:
    _refused(catalog, "two versions of VIB esx-base", BASE, BASE_NEW)


def test_dependencies_by_name_version_and_provides(catalog: Catalog) -> None:
    assert _spec(catalog, BASE, NET, API_USER)
    _refused(catalog, "depends on esx-base << 7.0.0, which no VIB in the profile provides", BASE, OLD_BASE_USER)
    _refused(catalog, "depends on esx-base >= 7.0.0", SAME_NAME_1, NET)


def test_conflicts_and_replaces(catalog: Catalog) -> None:
    _refused(catalog, "conflicts with net-a; remove one of them", BASE, NET, CONFLICTING)
    _refused(catalog, "replaces BootboxTest_bootbank_net-a_1.0.0-1.0.0; remove net-a", BASE, NET, REPLACER)


def test_stateless_needs_stateless_ready_vibs(catalog: Catalog) -> None:
    _refused(catalog, "is not stateless-ready.*use mode=install", BASE, NOT_STATELESS)
    spec = _spec(catalog, BASE, NOT_STATELESS, mode="install")
    assert spec["mode"] == "install"


def test_module_name_collisions_and_reserved_names(catalog: Catalog) -> None:
    _refused(catalog, "would load as module same.v00, which VIB .*clash-one.* already uses", BASE, CLASH_1, CLASH_2)
    _refused(catalog, "would load as module imgdb.tgz, which bootbox's own files already use", BASE, RESERVED)
    # The stateless call-in module is bootbox's too, whatever the case of the payload's vfatname.
    _refused(catalog, "would load as module BBCallin.tgz, which bootbox's own files already use", BASE,
             RESERVED_CALLIN)
    # Without vfatnames, payloads that share a name get numbered module names.
    kernel, modules = allocate_modules([catalog.vib(v.id) for v in (BASE, SAME_NAME_1, SAME_NAME_2)])
    assert kernel.name == "b.b00"
    assert [m.name for m in modules] == ["jumpstrt.gz", "k.b00", "s.v00", "payload1.v00", "payload1.v01"]


def test_a_profile_needs_a_kernel(catalog: Catalog) -> None:
    _refused(catalog, "no bootable kernel.*add the base ESXi VIB", NET.id.replace("net-a", "drv-one"))


def test_the_real_community_vib_joins_a_profile_only_at_community_level(catalog: Catalog) -> None:
    if not SHARED_VIB.is_file():
        lab_unavailable(f"the shared real VIB {SHARED_VIB} is not present")
    real = "virtuallyGhetto_bootbank_ghettoVCB_1.0.0-0.0.0"
    _refused(catalog, "CommunitySupported, below", BASE, real)
    spec = _spec(catalog, BASE, real, acceptance="community")
    kernel, modules = allocate_modules([catalog.vib(v) for v in spec["vibs"]])
    assert modules[-1].name == "payload1.v00" and modules[-1].size == 35315


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"vibz": []}, "spec.vibz"), ({"mode": "live"}, "spec.mode"), ({"kernelopt": "runweasel"}, "spec.kernelopt"),
     ({"kernelopt": "a\nb"}, "spec.kernelopt"), ({"kickstart": "vmaccepteula\n"}, "spec.kickstart"),
     ({"loaders": {"efi": "relative"}}, "spec.loaders.efi"), ({"loaders": {"grub": "/x"}}, "spec.loaders.grub"),
     ({"acceptance": "gold"}, "spec.acceptance")],
)
def test_spec_errors_name_the_field(catalog: Catalog, extra: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError) as info:
        normalize_spec({"vibs": [BASE.id], **extra}, catalog, "partner")
    assert info.value.field == field


def test_missing_vibs_name_the_index(catalog: Catalog) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_spec({"vibs": [BASE.id, "nope"]}, catalog, "partner")
    assert info.value.field == "spec.vibs[1]" and "bootbox vib list" in info.value.message
    with pytest.raises(ValidationError, match="non-empty list"):
        normalize_spec({"vibs": []}, catalog, "partner")


# ------------------------------------------------------------------------------- operations


def test_add_vib_replaces_the_older_version_and_keeps_the_rules(catalog: Catalog) -> None:
    spec = _spec(catalog, BASE, NET)
    new, changes = add_vib(spec, catalog.vib(BASE_NEW.id), catalog)
    assert new["vibs"] == [NET.id, BASE_NEW.id]
    assert changes == ["upgraded esx-base 7.0.3-0.0.1 -> 7.0.3-0.10.2"]
    back, changes = add_vib(new, catalog.vib(BASE.id), catalog)
    assert changes == ["downgraded esx-base 7.0.3-0.10.2 -> 7.0.3-0.0.1"]
    with pytest.raises(ValidationError, match="already in the profile"):
        add_vib(back, catalog.vib(NET.id), catalog)


def test_add_vib_of_a_lower_level_needs_the_level_lowered_explicitly(catalog: Catalog) -> None:
    spec = _spec(catalog, BASE)
    with pytest.raises(ValidationError, match="add it with --acceptance CommunitySupported"):
        add_vib(spec, catalog.vib(COMMUNITY.id), catalog)
    new, changes = add_vib(spec, catalog.vib(COMMUNITY.id), catalog, acceptance="CommunitySupported")
    assert new["acceptance"] == "community"
    assert changes == ["acceptance PartnerSupported -> CommunitySupported", f"added {COMMUNITY.id}"]
    assert check([catalog.vib(v) for v in new["vibs"]], new["acceptance"], new["mode"]).problems == ()


def test_remove_vib_refuses_to_break_a_dependency(catalog: Catalog) -> None:
    spec = _spec(catalog, BASE, NET, API_USER)
    with pytest.raises(ValidationError, match="esx-base is required by .*net-a.*remove net-a first"):
        remove_vib(spec, "esx-base", catalog)
    new, changes = remove_vib(spec, "api-user", catalog)
    assert new["vibs"] == [BASE.id, NET.id] and changes == [f"removed {API_USER.id}"]
    with pytest.raises(ValidationError, match="has no VIB 'tool-c'"):
        remove_vib(spec, "tool-c", catalog)


def test_diff_lists_what_differs(catalog: Catalog) -> None:
    a = {"name": "a", "acceptance": "partner", "mode": "stateless", "vibs": [BASE.id, NET.id, API_USER.id]}
    b = {"name": "b", "acceptance": "community", "mode": "stateless",
         "vibs": [BASE_NEW.id, NET.id, COMMUNITY.id, "Gone_bootbank_x_1"]}
    result = diff(a, b, catalog)
    assert result["only_a"] == ["api-user 1.0.0-1.0.0"]
    assert result["only_b"] == ["Gone_bootbank_x_1 (not imported)", "tool-c 1.0.0-1.0.0"]
    assert result["changed"] == ["esx-base 7.0.3-0.0.1 -> 7.0.3-0.10.2"]
    assert result["same"] == 1 and result["settings"] == {"acceptance": ["partner", "community"]}
