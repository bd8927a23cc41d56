"""A stdout callback for ``ansible-playbook``: one JSON line per task result, for bootbox's timeline.

Loaded by ``ansible-playbook`` (never imported by bootbox) through ``ANSIBLE_CALLBACK_PLUGINS``
and ``ANSIBLE_STDOUT_CALLBACK=bootbox_events``. Each line is ``BOOTBOX-EVENT {json}`` with the
event (``play``, ``task``, ``stats``), the task's name, its status (``ok``, ``changed``,
``failed``, ``unreachable``, ``skipped``) and, for a failure, Ansible's short message. It prints
no module output: task results may hold the host's secrets (the answers are the play's
variables), and bootbox puts these lines on a timeline that operators read and logs keep. A
task with ``no_log`` reaches callbacks censored by Ansible itself.
"""

from __future__ import annotations

import json
import sys

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bootbox_events
    type: stdout
    short_description: one JSON line per task result, for bootbox's host timeline
    description:
        - Used by the bootbox ansible plugin; prints task names and statuses, never module output.
"""

PREFIX = "BOOTBOX-EVENT "
MESSAGE_LIMIT = 300


def _task(result):
    return getattr(result, "task", None) or result._task


def _data(result):
    data = getattr(result, "result", None)
    return data if isinstance(data, dict) else result._result


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "bootbox_events"

    def _emit(self, event, **fields):
        sys.stdout.write(PREFIX + json.dumps({"event": event, **fields}, default=str) + "\n")
        sys.stdout.flush()

    def _result(self, result, status, ignore_errors=False):
        task = _task(result)
        data = _data(result)
        fields = {"task": task.get_name().strip(), "action": str(getattr(task, "action", "")), "status": status}
        if status == "ok" and data.get("changed"):
            fields["status"] = "changed"
        if status in ("failed", "unreachable"):
            message = " ".join(str(data.get("msg") or data.get("stderr") or data.get("censored") or "").split())
            if "REMOTE HOST IDENTIFICATION HAS CHANGED" in message or "Host key verification failed" in message:
                # ssh's banner is long; what matters is that the host is not the one expected
                message = ("Host key verification failed: the host answered with another SSH host key than "
                           "the one its user-data gave it for this boot")
            fields["message"] = message[:MESSAGE_LIMIT]
            fields["ignored"] = bool(ignore_errors)
        self._emit("task", **fields)

    def v2_playbook_on_play_start(self, play):
        self._emit("play", play=play.get_name().strip())

    def v2_runner_on_ok(self, result):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "failed", ignore_errors)

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped")

    def v2_playbook_on_no_hosts_matched(self):
        self._emit("no_hosts")

    def v2_playbook_on_stats(self, stats):
        totals = {}
        for host in sorted(stats.processed.keys()):
            totals = stats.summarize(host)
        self._emit("stats", **{key: int(value) for key, value in totals.items()})
