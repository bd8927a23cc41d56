"""Process-level helpers the layers above share: how bootbox behaves as a program on a machine.

Atomic file replacement (:mod:`~bootbox.runtime.atomic`), background work in short slices that
keep the boot path responsive (:mod:`~bootbox.runtime.pacing`), garbage collection while a server
is idle (:mod:`~bootbox.runtime.idlegc`) and the mapping of client-supplied file names into a
served root (:mod:`~bootbox.runtime.safepath`). None of it knows what a host, a rule or a plugin
is. It sits at the bottom of the layers with the settings and the model, and may import only
``bootbox.errors`` and ``bootbox.version`` (docs/architecture.md).
"""
