"""Secrets: encryption at rest, SHA-512 crypt, and answer files only for the host they belong to."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from bootbox import BootboxError, ValidationError
from bootbox.model import Host, HostState
from bootbox.service.answers.tokens import BootTokens
from bootbox.service.identity import NeighbourTable
from bootbox.store.secretbox import SecretBox, sha512_crypt
from bootbox.service.bootservice import BootService
from bootbox.web import create_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAC, OTHER = "52:54:00:5e:c0:01", "52:54:00:5e:c0:02"
SECRET = "correct horse battery staple"
HOST_IP, OTHER_IP = "198.18.0.21", "198.18.0.99"


# ------------------------------------------------------------------ SHA-512 crypt


@pytest.mark.parametrize(
    ("password", "salt", "rounds", "expected"),
    [  # the vectors published with Drepper's "Unix crypt using SHA-256 and SHA-512" specification
        ("Hello world!", "saltstring", None,
         "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
        ("Hello world!", "saltstringsaltstring", 10000,
         "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
        ("This is just a test", "toolongsaltstring", 5000,
         "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
        ("a very much longer text to encrypt.  This one even stretches over morethan one line.",
         "anotherlongsaltstring", 1400,
         "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ],
)
def test_sha512_crypt_matches_the_specification(password: str, salt: str, rounds: int | None, expected: str) -> None:
    assert sha512_crypt(password, salt, rounds) == expected


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("password", ["x", "pässwörd", "a" * 200, "with spaces and $ymbols!"])
def test_sha512_crypt_matches_openssl(password: str) -> None:
    ours = sha512_crypt(password, "Ab3.def/ghijKLMN")
    theirs = subprocess.run(["openssl", "passwd", "-6", "-salt", "Ab3.def/ghijKLMN", "-stdin"], input=password + "\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    assert ours == theirs


def test_sha512_crypt_refuses_a_salt_crypt_cannot_carry() -> None:
    with pytest.raises(ValidationError):
        sha512_crypt("x", "bad$salt")


# ------------------------------------------------------------------ encryption at rest


def test_the_key_is_private_and_apart_from_the_store(tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "state" / "secrets.key")
    stored = box.encrypt(SECRET)
    assert stored.startswith("fernet:") and SECRET not in stored
    assert (tmp_path / "state" / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert SecretBox(tmp_path / "state" / "secrets.key").decrypt(stored) == SECRET  # the same key on restart
    with pytest.raises(BootboxError, match="set that answer again"):
        SecretBox(tmp_path / "elsewhere.key").decrypt(stored)


def test_hashes_are_stable_per_host_and_field_and_differ_across_hosts(tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "k")
    one = box.hash_password(SECRET, MAC, "root_password")
    assert one == box.hash_password(SECRET, MAC, "root_password")
    assert one != box.hash_password(SECRET, OTHER, "root_password")
    salt = one.split("$")[2]
    assert sha512_crypt(SECRET, salt) == one


# ------------------------------------------------------------------ tokens


def test_tokens_are_per_boot_once_per_file_and_expire(tmp_path: Path) -> None:
    now = [1000.0]
    tokens = BootTokens(SecretBox(tmp_path / "key").derive, answer_ttl=60, up_ttl=120, clock=lambda: now[0])
    host = Host(mac=MAC, boot_nonce="n1", boot_started=now[0], state=HostState.BOOTING)
    other = Host(mac=OTHER, boot_nonce="n1", boot_started=now[0])
    token = tokens.answer_token(host)
    assert token == tokens.answer_token(host)  # a re-fetch within the boot: the same token
    assert tokens.answer_token(other) != token and tokens.up_token(other) != tokens.up_token(host)
    tokens.check_answer(host, token, "user-data")
    tokens.redeem(host, token, "user-data")
    for who, presented, reason in [(host, token, "already served"), (other, token, "unknown or revoked"),
                                   (host, "forged", "unknown or revoked")]:
        with pytest.raises(BootboxError, match=reason):
            tokens.check_answer(who, presented, "user-data")
    assert tokens.up_refusal(host, tokens.up_token(host)) is None
    assert tokens.up_refusal(host, tokens.up_token(other)) == "not the token of the host's current boot"
    now[0] += 61
    with pytest.raises(BootboxError, match="expired"):
        tokens.check_answer(host, token, "meta-data")
    assert tokens.up_refusal(host, tokens.up_token(host)) is None  # the up token lasts longer
    now[0] += 60
    assert "expired" in str(tokens.up_refusal(host, tokens.up_token(host)))
    second = Host(mac=MAC, boot_nonce="n2", boot_started=now[0])  # the next boot
    with pytest.raises(BootboxError, match="unknown or revoked"):
        tokens.check_answer(second, token, "user-data")
    tokens.check_answer(second, tokens.answer_token(second), "user-data")  # served once per boot


# ------------------------------------------------------------------ the answer-file URL, end to end


@pytest.fixture
def client(service: BootService, tmp_path: Path) -> FlaskClient:
    app = create_app(service, token=TOKEN)
    client = app.test_client()
    service.identity.neighbours = NeighbourTable(read_v4=lambda: {HOST_IP: MAC, OTHER_IP: OTHER})
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    spec = {"kernel": str(kernel), "cmdline": "ds=nocloud-net;s={answers}"}
    client.post("/api/v1/profiles", json={"name": "deb", "kind": "linux", "spec": spec}, headers=AUTH)
    profile = {"name": "web", "kind": "cloud-init",
               "inputs": [{"name": "root_password", "type": "password"}, {"name": "api_key", "secret": True}],
               "templates": {"user-data": "#cloud-config\npassword: {{ answers.root_password }}\n"
                                          "api_key: {{ answers.api_key }}\n"}}
    client.post("/api/v1/hostprofiles", json=profile, headers=AUTH)
    client.post("/api/v1/rules", json={"name": "all", "all_hosts": True,
                                       "items": {"image": "deb", "host_profile": "web"}}, headers=AUTH)
    for mac in (MAC, OTHER):
        values = {"root_password": SECRET, "api_key": f"key-of-{mac}-{SECRET}"}
        assert client.patch(f"/api/v1/hosts/{mac}/answers", json={"values": values}, headers=AUTH).status_code == 200
    return client


def _boot(client: FlaskClient, mac: str, ip: str) -> str:
    script = client.get(f"/boot/hosts/{mac}/script.ipxe", environ_base={"REMOTE_ADDR": ip}).text
    match = re.search(r";s=http://localhost(/boot/hosts/\w+/answers/[\w-]+/)", script)
    assert match, script
    return match.group(1)


def _get(client: FlaskClient, path: str, ip: str = HOST_IP) -> tuple[int, str]:
    response = client.get(path, environ_base={"REMOTE_ADDR": ip})
    return response.status_code, response.text


def test_only_the_host_it_was_minted_for_gets_its_answer_file(
    client: FlaskClient, service: BootService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    base = _boot(client, MAC, HOST_IP)
    _boot(client, OTHER, OTHER_IP)
    token = base.rstrip("/").rsplit("/", 1)[1]
    attempts = {
        "another host's MAC": (base.replace("5254005ec001", "5254005ec002") + "user-data", OTHER_IP),
        "a wrong source address": (base + "user-data", OTHER_IP),
        "a forged token": (base.replace(token, "A" * len(token)) + "user-data", HOST_IP),
    }
    for why, (path, ip) in attempts.items():
        assert _get(client, path, ip)[0] == 403, why
    status, text = _get(client, base + "user-data")
    assert status == 200 and re.search(r"password: \$6\$", text) and f"api_key: key-of-{MAC}-{SECRET}" in text
    assert SECRET not in text.split("api_key")[0]  # the password itself is only ever sent hashed
    assert _get(client, base + "user-data")[0] == 403  # a replayed token
    audits = [e for e in service.host_events(MAC) if e.kind == "audit"] + \
             [e for e in service.host_events(OTHER) if e.kind == "audit"]
    assert len(audits) == 4
    assert {e.data["reason"].split(" ")[0] for e in audits} >= {"the", "unknown", "user-data"}
    # Nothing secret in the logs or on the timeline: not the password, not its hash, not the token.
    journal = json.dumps([e.to_dict() for m in (MAC, OTHER) for e in service.host_events(m)])
    pw_hash = re.search(r"password: (\S+)", text).group(1)  # type: ignore[union-attr]
    for leak in (SECRET, pw_hash, token):
        assert leak not in caplog.text and leak not in journal


def test_an_expired_token_is_refused(client: FlaskClient, service: BootService) -> None:
    shift = [0.0]
    service.hostconfig.tokens = BootTokens(service.hostconfig.box.derive, answer_ttl=30, up_ttl=60,
                                           clock=lambda: time.time() + shift[0])
    base = _boot(client, MAC, HOST_IP)
    shift[0] += 31
    assert _get(client, base + "user-data")[0] == 403
    assert any("expired" in e.message for e in service.host_events(MAC) if e.kind == "audit")


def test_a_new_boot_revokes_the_previous_url_and_meta_data_is_per_boot(client: FlaskClient,
                                                                      service: BootService) -> None:
    first = _boot(client, MAC, HOST_IP)
    assert _boot(client, MAC, HOST_IP) == first  # a re-fetch within one boot keeps its token
    up = service.hostconfig.up_token(MAC)
    assert client.post(f"/api/v1/hosts/{MAC}/booted?token={up}", data={"boot_id": "b1"},
                       environ_base={"REMOTE_ADDR": HOST_IP}).status_code == 200
    second = _boot(client, MAC, HOST_IP)  # the first script request after its report-in: a new boot
    assert second != first and service.hostconfig.up_token(MAC) != up
    assert _get(client, first + "meta-data")[0] == 403
    status, meta = _get(client, second + "meta-data")
    assert status == 200 and meta.startswith("instance-id: bootbox-5254005ec001-")
    assert _get(client, second + "nothing")[0] == 404


def test_the_store_file_holds_no_secret(tmp_path: Path) -> None:
    from bootbox.store.journal import Journal
    from bootbox.hooks.manager import make_plugin_manager
    from bootbox.store.tinydb import TinyDBStore
    from tests.conftest import test_settings

    import bootbox_linux

    settings = test_settings(tmp_path)
    Path(settings.state_dir).mkdir(parents=True)
    store = TinyDBStore(settings.state_path)
    service = BootService(settings, store, Journal(None), make_plugin_manager(load_entrypoints=False,
                                                                             extra_plugins=[bootbox_linux]))
    service.start()
    try:
        profile = {"name": "p", "kind": "preseed", "inputs": [{"name": "pw", "type": "password"}],
                   "templates": {"preseed.cfg": "d-i passwd/root-password-crypted password {{ answers.pw }}\n"}}
        service.hostconfig.profiles.put(profile, replace_existing=False)
        service.hostconfig.answers.set(MAC, {"pw": SECRET}, service.hostconfig.known_inputs(MAC))
    finally:
        service.close()
        store.close()
    files = [p for p in Path(settings.state_dir).iterdir() if p.is_file()]
    assert any(p.name == "bootbox.json" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
