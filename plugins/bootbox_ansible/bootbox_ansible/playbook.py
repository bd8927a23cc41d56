"""What an ``ansible`` host profile's playbook must look like, checked before Ansible sees it.

Ansible's own errors come late (at the push, after a host booted) and name line numbers of a
temporary file; these checks run when the profile is added and every time it is rendered, and
name the field: ``templates.playbook.yml[0].hosts``. They check the shape bootbox relies on,
not Ansible's whole grammar: a list of plays, each a mapping that targets ``all`` (the push's
inventory holds exactly the one host that reported up) and has something to do. Whatever
passes here and still does not parse for Ansible (an unknown module, a bad keyword) fails the
push at once with Ansible's message, without retries (:mod:`bootbox_ansible.runner`).

The playbook is a host-profile template like any other: bootbox renders it with the host's
answers first (``{{ answers.hostname }}``), so Ansible's own Jinja must be inside
``{% raw %}…{% endraw %}`` (the answers are also given to Ansible as variables, see docs/ansible.md).
"""

from __future__ import annotations

from typing import Any

import yaml
from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bootbox import ValidationError

FILE = "playbook.yml"
WHERE = f"templates.{FILE}"
ACTIONS = ("tasks", "roles", "pre_tasks", "post_tasks", "handlers")
REFUSED = {
    "import_playbook": "plays are read from this one file only; put the imported plays here",
    "include_playbook": "plays are read from this one file only; put the included plays here",
    "connection": "the push always connects over SSH with the appliance's key",
    "vars_files": "a host profile is one file; use vars, or the host's answers",
}


def check_playbook(text: str, where: str = WHERE) -> list[dict[str, Any]]:
    """The plays of a rendered playbook; ValidationError naming the field when it is unusable."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(where, f"{line}not valid YAML ({problem})") from None
    if not isinstance(doc, list) or not doc:
        raise ValidationError(where, "expected a playbook: a YAML list of plays (- hosts: all ...)")
    for i, play in enumerate(doc):
        at = f"{where}[{i}]"
        if not isinstance(play, dict):
            raise ValidationError(at, "expected a play: a mapping with hosts and tasks")
        for key, why in REFUSED.items():
            if key in play:
                raise ValidationError(f"{at}.{key}", why)
        hosts = play.get("hosts")
        if hosts is None:
            raise ValidationError(f"{at}.hosts", "required: use 'all' (the push targets the host that reported up)")
        if hosts != "all" and hosts != ["all"]:
            raise ValidationError(f"{at}.hosts", f"{hosts!r}: use 'all' (the push's inventory is the one host "
                                                 "that reported up)")
        if not any(play.get(key) for key in ACTIONS):
            raise ValidationError(at, f"the play does nothing: give it one of {', '.join(ACTIONS)}")
        for key in ACTIONS:
            value = play.get(key)
            if value is not None and not isinstance(value, list):
                raise ValidationError(f"{at}.{key}", "expected a list")
            for j, task in enumerate(value or []):
                if not isinstance(task, (dict, str)):
                    raise ValidationError(f"{at}.{key}[{j}]", "expected a task: a mapping (name, module: args)")
    return doc


_ENVIRONMENT = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False, trim_blocks=True,
                                             lstrip_blocks=True, keep_trailing_newline=True)


def check_template(text: str, where: str = WHERE) -> None:
    """Check a playbook template when its host profile is added, before any host's answers exist.

    It is rendered with every variable undefined (an answer reads as ``""``; a loop over one runs
    no times), in a sandbox as bootbox's own rendering is, and the result's shape is checked: a
    playbook that is wrong whatever the answers are is refused at ``hostprofile add``.
    """
    try:
        rendered = _ENVIRONMENT.from_string(text).render()
    except TemplateError as exc:
        raise ValidationError(where, f"cannot render: {exc}") from None
    check_playbook(rendered, where)
