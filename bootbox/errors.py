"""The exceptions bootbox raises.

Library code raises these; only the CLI and the web layer turn them into exit codes and HTTP
statuses, so every module can stay free of presentation concerns.
"""

from __future__ import annotations


class BootboxError(Exception):
    """Base class: a problem an operator can act on; the message says what to do."""

    http_status = 400


class NotFound(BootboxError):
    """A named thing (host, profile, rule, document) does not exist."""

    http_status = 404


class Conflict(BootboxError):
    """The request clashes with what exists (duplicate name, store already locked)."""

    http_status = 409


class ValidationError(BootboxError):
    """Input failed validation; ``field`` names the offending field or config key."""

    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigError(ValidationError):
    """The configuration is invalid; ``field`` is the dotted config key."""


class PluginError(BootboxError):
    """A plugin failed to load or broke the hook contract."""

    http_status = 500


class StoreLocked(Conflict):
    """Another process owns the state directory."""


class Forbidden(BootboxError):
    """The caller may not do this (bad token, another host's resource)."""

    http_status = 403


class Unauthorized(BootboxError):
    """No valid API token was presented."""

    http_status = 401


class PushRefused(BootboxError):
    """Raised by an after-boot push that must not be retried (e.g. "unprepare the host first").

    Plugins raise it from ``bootbox_host_up``; the push pool (:mod:`bootbox.service.pushes`)
    ends the job at once instead of retrying it.
    """

    http_status = 409
