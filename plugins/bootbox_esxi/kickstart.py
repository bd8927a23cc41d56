"""The ``kickstart`` answer kind: an ESXi scripted install's ``ks.cfg``, from a host profile.

bootbox's core keeps host profiles (Jinja2 templates plus per-host inputs) and answers, and
serves answer files through single-use URLs; this plugin renders the ``kickstart`` kind
(``bootbox_render_answer_file``) and points install-mode hosts at it (``ks=`` in boot.cfg is
``boot.answer_url("ks.cfg")``). Two things are checked or added here, because only a kickstart
renderer knows them:

* **rootpw must be hashed.** A ks.cfg travels over plain HTTP on the boot network, and ESXi
  accepts ``rootpw --iscrypted <crypt hash>``; a plain-text ``rootpw`` is refused with what to
  write instead (a ``password`` input, which templates see as its SHA-512 crypt hash). Errors
  name the line, never the value.
* **The host calls in after the install.** In install mode a kickstart without a
  ``%firstboot`` section gets ``%firstboot --interpreter=busybox`` with the call-in launcher
  (``callin.launcher``), so the installed host reports up on its first boot. A kickstart that
  has its own ``%firstboot`` is left alone: its author can add ``{{ bootbox.callin }}``.

ESXi kickstart syntax (VMware's "Installation and Upgrade Script Commands"): commands first,
one per line, ``#`` comments; sections start with a line ``%pre``, ``%post`` or ``%firstboot``
(with options) and run to the next section or the end; ESXi has no ``%end``.
"""

from __future__ import annotations

import re

from bootbox import AnswerEnv, ValidationError
from bootbox_esxi.callin import launcher

KIND = "kickstart"
FILE = "ks.cfg"
FIELD = f"templates.{FILE}"
FIRSTBOOT = "%firstboot --interpreter=busybox"
MASK = "<masked>"
"""What the core renders in place of a secret (and its hash) in an operator's preview."""

_CRYPT = re.compile(r"\$[0-9a-z]{1,2}\$[./0-9A-Za-z$=,]+")
"""A crypt(3) string as ESXi's ``rootpw --iscrypted`` takes it: ``$6$salt$hash``, ``$1$…``."""


def _commands(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, words)`` of every command line, that is every line before the first section."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith("%"):
            break
        found.append((number, words))
    return found


def check_rootpw(text: str) -> None:
    """Refuse a ``rootpw`` that is not a crypt hash given with ``--iscrypted``."""
    for number, words in _commands(text):
        if words[0] != "rootpw":
            continue
        options = [w for w in words[1:] if w.startswith("--")]
        values = [w for w in words[1:] if not w.startswith("--")]
        if "--iscrypted" not in options:
            raise ValidationError(FIELD, (
                f"line {number}: rootpw gives the root password in plain text, which every reader of this "
                "ks.cfg would see; declare a password input (type: password) and write "
                "rootpw --iscrypted {{ answers.NAME }}: templates see its SHA-512 crypt hash"))
        if len(values) != 1 or not (values[0] == MASK or _CRYPT.fullmatch(values[0])):
            raise ValidationError(FIELD, (
                f"line {number}: rootpw --iscrypted needs one crypt hash ($6$salt$hash); give it a password "
                "input (type: password), whose value templates see as that hash"))


def has_firstboot(text: str) -> bool:
    return any(line.lstrip().startswith("%firstboot") for line in text.splitlines())


def render(env: AnswerEnv, *, add_callin: bool) -> dict[str, str]:
    """``{"ks.cfg": text}`` for one host, checked, with the call-in appended when it has none."""
    text = env.render(FILE)
    check_rootpw(text)
    if add_callin and not has_firstboot(text):
        body = text.rstrip("\n")
        text = f"{body}\n\n{FIRSTBOOT}\n{launcher(env.up_url)}"
    return {FILE: text}
