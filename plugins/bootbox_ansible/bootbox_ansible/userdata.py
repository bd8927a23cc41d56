"""The cloud-init side of an ``ansible`` host profile: NoCloud files that let the push log in.

An ``ansible`` host profile is a cloud-init host profile plus a playbook: the host pulls its
``user-data`` (optional here) and ``meta-data`` through the same single-use answer URL as a
``cloud-init`` profile, and this module adds the appliance's public key to the user-data
(``ssh_authorized_keys``) for this host only, at every boot. So the key is never in the shared
image, and the linux plugin needs to know nothing of Ansible.

cloud-init gives top-level ``ssh_authorized_keys`` to the image's default user, and to root
only when ``disable_root`` is false (with it true, Debian's default, root's copy gets a
``command=`` that refuses the login). The push logs in as ``plugins.ansible.user``: for
``root`` the user-data gets ``disable_root: false``; for another user listed in ``users`` the
key is added to that entry too.

The host's own SSH host key comes the same way (``ssh_keys``, written by cloud-init before sshd
starts), new for every boot (:func:`bootbox_ansible.keys.host_key`), so the push can check that it
talks to the machine that fetched this boot's user-data, not to whoever answers at its address.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import yaml

from bootbox import ValidationError

CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config", "vendor-data")
HEADER = "#cloud-config"


def _add_key(keys: Any, key: str, where: str) -> list[str]:
    if keys is None:
        keys = []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValidationError(where, "expected a list of public keys")
    return keys if key in keys else [*keys, key]


def with_key(user_data: str, public_key: str, user: str, host_key: tuple[str, str] | None = None) -> str:
    """``user_data`` (a ``#cloud-config`` document, or "") with ``public_key`` authorised for ``user``,
    and ``host_key`` (private, public) as the host's ed25519 SSH host key (cloud-init's
    ``ssh_keys``) unless the document brings host keys of its own."""
    where = "templates.user-data"
    if user_data.strip() and not user_data.startswith(HEADER):
        raise ValidationError(where, f"an ansible host profile's user-data must be a {HEADER} document "
                                     "(bootbox adds the appliance's SSH key to it)")
    try:
        doc = yaml.safe_load(user_data) if user_data.strip() else {}
    except yaml.YAMLError as exc:
        raise ValidationError(where, f"renders to invalid YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValidationError(where, f"a {HEADER} document must be a mapping")
    doc["ssh_authorized_keys"] = _add_key(doc.get("ssh_authorized_keys"), public_key, f"{where}.ssh_authorized_keys")
    if user == "root":
        if doc.get("disable_root") is True:
            raise ValidationError(f"{where}.disable_root", "true would refuse the push, which logs in as root "
                                                           "(plugins.ansible.user); remove it or log in as another user")
        doc["disable_root"] = False
    if host_key is not None and "ssh_keys" not in doc:
        doc["ssh_keys"] = {"ed25519_private": host_key[0], "ed25519_public": host_key[1]}
    users = doc.get("users")
    if isinstance(users, list):
        for i, entry in enumerate(users):
            if isinstance(entry, dict) and entry.get("name") == user:
                entry["ssh_authorized_keys"] = _add_key(entry.get("ssh_authorized_keys"), public_key,
                                                        f"{where}.users[{i}].ssh_authorized_keys")
    return HEADER + "\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)


class _Dumper(yaml.SafeDumper):
    """Safe YAML, with multi-line strings (a PEM key, a file's content) as literal blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.strip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def pinned_host_key(user_data: str) -> str:
    """The ed25519 host key a rendered user-data gives the host ("" when it gives none)."""
    doc = yaml.safe_load(user_data) or {}
    keys = doc.get("ssh_keys") if isinstance(doc, dict) else None
    value = keys.get("ed25519_public") if isinstance(keys, dict) else None
    return value.strip() if isinstance(value, str) else ""


def render_files(templates: Mapping[str, str], render: Callable[[str], str], *, public_key: str, user: str,
                 instance_id: str, hostname: str, host_key: tuple[str, str] | None = None) -> dict[str, str]:
    """Every NoCloud file of one boot: the profile's cloud-init templates rendered, the key added
    to ``user-data`` (made when the profile has none) and ``meta-data`` with this boot's
    ``instance-id`` when the profile has none, so cloud-init runs again on every boot."""
    files = {name: render(name) for name in templates if name in CLOUD_INIT_FILES}
    files["user-data"] = with_key(files.get("user-data", ""), public_key, user, host_key)
    if "meta-data" not in files:
        files["meta-data"] = yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)
    return files
