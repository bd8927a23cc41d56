"""The service: :class:`~bootbox.service.bootservice.BootService` and the parts it is made of.

The one object the protocol servers, the web app and the CLI's API talk to, and its parts:
image profiles, the rule book, the in-memory host index, the DNS view, per-firmware boot paths,
the after-boot state machine, the push pool, what plugins registered, and host profiles with
their answers (:mod:`~bootbox.service.answers`). Each part is handed the few collaborators it
uses (:mod:`~bootbox.service.collaborators`), never the service, and none imports it. It composes the store, the plugin manager and
the pure core, and with ``bootbox.hooks`` is the only caller of ``pm.hook``. It may import
``bootbox.hooks``, ``bootbox.store``, the core and the bottom layers; nothing in it imports the
servers (net), the web app, the appliance or the CLI (docs/architecture.md).
"""
