"""The pure core: bootbox's decisions as functions of values.

The DHCP boot decision (:mod:`~bootbox.core.policy`), the text bootbox writes for a booting host
(:mod:`~bootbox.core.render`), deploy rules (:mod:`~bootbox.core.rules`), host profiles
(:mod:`~bootbox.core.hostprofile`), the DNS zone (:mod:`~bootbox.core.dnszone`) and host-profile
lint (:mod:`~bootbox.core.lint`). Nothing here opens a socket, starts a thread, touches the store
or knows a framework (tests/test_architecture.py enforces it), so every rule of the appliance can
be tested, and proved with hypothesis, as plain functions. It may import only the layers below
it: ``bootbox.runtime``, ``bootbox.config``, ``bootbox.model``, ``bootbox.errors`` and
``bootbox.version`` (docs/architecture.md).
"""
