"""How a booted ESXi host reports up to bootbox: the launcher, the per-host boot module, its keys.

bootbox's core gives every boot an ``up`` URL carrying the host's token (``BootContext.up_url``)
and a script that POSTs to it with Auto Deploy's backoff until it gets 200
(``bootbox.callin_script``). This module puts that script where ESXi runs it:

* **stateless**: a small boot module, ``bbcallin.tgz``, added at the end of boot.cfg's
  ``modules=`` (after ``imgdb.tgz``, as Auto Deploy's own ``state.tgz`` comes last) and never to
  the image or its imgdb. It holds ``etc/rc.local.d/local.sh`` (mode 0755) and the host's TLS
  files (below). ``local.sh`` is the file VMware documents as run at the end of every boot since ESXi 5.1 (KB 2043564) and
  the one community scripts edit; a tgz module later in ``modules=`` overlays the base image's
  file, which is how ESXi's own ``state.tgz`` restores an edited ``local.sh`` [I]. ESXi 4.1's
  ``/etc/rc.local`` ran *every* executable in ``/etc/rc.local.d``; whether 7.x/8.x still do is
  **unconfirmed**, so a separate ``bootbox.sh`` there might never run: ``local.sh`` is the one
  location known to run. The stock ``local.sh`` holds only comments and ``exit 0``.
* **install**: the same launcher text as a kickstart ``%firstboot --interpreter=busybox``
  section (``kickstart.py``), run once on the installed host's first boot.

The launcher runs the call-in loop **in the background** and returns at once: the loop never
gives up, and a boot script that blocked on it would hold the host's boot while bootbox's
pushes may need the host up. Output goes to ``/var/log/bootbox-callin.log``. It first adds an
outbound rule for the appliance's port to ESXi's firewall (which blocks outgoing traffic not
in a ruleset, and ``httpClient`` covers only 80/443) with a rule file in
``/etc/vmware/firewall/`` and ``localcli network firewall refresh`` (the custom-rule method
VMware's firewall docs describe; not tried on a host here).

With the appliance's host CA on (``[plugins.esxi] host_cert_days``), the module also carries the
host's TLS key and certificate (``etc/vmware/ssl/rui.crt``/``rui.key``, ``hostcert.py``), issued
when it is rendered, as Auto Deploy delivers each host's certificate in its boot image.

The module carries the host's up token (and its TLS key), so it is served only through a **per-boot key**
(:class:`CallinKeys`): derived from the boot's up token when the host fetches its iPXE script
(so a re-fetch in the same boot gets the same key), carried in the boot.cfg URL, revoked by the
host's next boot and by an appliance restart (keys live in memory only). The core serves the
module's route only to a requester that may act for the MAC (``bootbox.service.identity``).
Any other request (another host's MAC, an old or made-up key) gets 403 and an ``audit`` event.
The module is built per request (a few hundred bytes), never cached, never in the image tree.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import re
import tarfile
import threading
import urllib.parse

from bootbox import Forbidden, callin_script

MODULE = "bbcallin.tgz"
"""The call-in module's name: 8.3 like every module name, and reserved (``image.RESERVED``) so
no VIB payload can load under it."""

LOCAL_SH = "etc/rc.local.d/local.sh"
RUI_CRT = "etc/vmware/ssl/rui.crt"
RUI_KEY = "etc/vmware/ssl/rui.key"
LOG = "/var/log/bootbox-callin.log"
FIREWALL_RULE = "/etc/vmware/firewall/bootbox.xml"
KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a per-boot key (or a core answer token) looks like in a URL: ``secrets.token_urlsafe``."""


def _port(up_url: str) -> int:
    parts = urllib.parse.urlsplit(up_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _firewall_rule(port: int) -> str:
    """An ESXi ruleset opening outbound TCP to ``port`` (the appliance's), in the ruleset.xml format.

    The service id is far above the small numbers ESXi's own ``service.xml`` counts up from, so a
    clash is unlikely (whether ids must be unique across files is not documented).
    """
    return (
        "<ConfigRoot>\n"
        '  <service id="9000">\n'
        "    <id>bootbox</id>\n"
        '    <rule id="0000">\n'
        "      <direction>outbound</direction>\n"
        "      <protocol>tcp</protocol>\n"
        "      <porttype>dst</porttype>\n"
        f"      <port>{port}</port>\n"
        "    </rule>\n"
        "    <enabled>true</enabled>\n"
        "    <required>false</required>\n"
        "  </service>\n"
        "</ConfigRoot>\n"
    )


def launcher(up_url: str, configure: str = "") -> str:
    """Shell text (``/bin/sh``, busybox) that opens the firewall and starts the call-in loop in
    the background; the same text is ``local.sh`` (stateless) and the ``%firstboot`` body (install).

    No line starts with ``%``, so the text cannot end a kickstart section early. ``configure``
    (the boot-module path's ``esxcli`` script, ``hostprofile/esxcli.py``) runs first, in the same
    background job, so the host reports up once it is configured.
    """
    loop = callin_script(up_url).rstrip("\n")
    text = "\n".join([
        "#!/bin/sh",
        "# bootbox: report this boot to the appliance until it answers 200, in the background so the",
        f"# boot goes on while configuration is pushed. Progress: {LOG}",
        "if [ -d /etc/vmware/firewall ] && command -v localcli >/dev/null 2>&1; then",
        f"    cat > {FIREWALL_RULE} <<'BOOTBOX_FIREWALL'",
        _firewall_rule(_port(up_url)).rstrip("\n"),
        "BOOTBOX_FIREWALL",
        "    localcli network firewall refresh || true",
        "fi",
        "(",
        *([configure.rstrip("\n")] if configure else []),
        loop,
        f") >{LOG} 2>&1 </dev/null &",
        "exit 0",
        "",
    ])
    if any(line.startswith("%") for line in text.splitlines()):
        raise ValueError("the launcher would end a kickstart section early")
    return text


def _member(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def build_module(up_url: str, configure: str = "", certificate: tuple[bytes, bytes] | None = None) -> bytes:
    """The ``bbcallin.tgz`` bytes for one host: a gzip'd tar with ``etc/rc.local.d/local.sh`` and,
    with ``certificate`` (``(cert PEM, key PEM)`` from the appliance's CA, ``hostcert.py``), the
    host's TLS identity as ``etc/vmware/ssl/rui.crt`` (0644) and ``rui.key`` (0400), where ESXi's
    ``hostd`` and reverse proxy read theirs, as Auto Deploy delivers each host's certificate.

    Only the files, no directory entries: ``/etc/rc.local.d`` and ``/etc/vmware/ssl`` exist on
    every ESXi, and a directory entry would also reset that directory's mode and owner on the host.
    """
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            _member(tar, LOCAL_SH, launcher(up_url, configure).encode(), 0o755)
            if certificate is not None:
                cert_pem, key_pem = certificate
                _member(tar, RUI_CRT, cert_pem, 0o644)
                _member(tar, RUI_KEY, key_pem, 0o400)
    return raw.getvalue()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class CallinKeys:
    """The live per-boot keys of the call-in module, one per host; thread-safe, memory only.

    Only each key's SHA-256 is kept, beside the host's up token (which the core can derive again
    at any time, so keeping it adds nothing a memory dump would not already give).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, str]] = {}

    def mint(self, mac: str, up_token: str) -> str:
        """The key of this boot of ``mac``: the same for every fetch of the boot's script (the
        core gives one up token per boot, and a retry must not revoke the key the host holds);
        a new boot's up token makes a new key, and the previous one stops working."""
        key = base64.urlsafe_b64encode(hashlib.sha256(f"callin\x00{up_token}".encode()).digest()[:24]).decode()
        with self._lock:
            self._keys[mac] = (_digest(key), up_token)
        return key

    def up_token(self, mac: str, key: str) -> str:
        """The up token behind ``key`` if it is ``mac``'s current key; else :class:`Forbidden`."""
        with self._lock:
            held = self._keys.get(mac)
        if held is None:
            raise Forbidden(f"host {mac} has no call-in module for this boot (it fetches its script first)")
        if not hmac.compare_digest(held[0], _digest(key)):
            raise Forbidden("the call-in key is not this host's for its current boot")
        return held[1]

    def revoke(self, mac: str) -> None:
        """Forget ``mac``'s key (its boot no longer has a call-in module)."""
        with self._lock:
            self._keys.pop(mac, None)
