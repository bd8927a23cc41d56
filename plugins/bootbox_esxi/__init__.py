"""The ``esxi`` boot kind: ESXi image profiles from software depots, and stateless ESXi boot.

Shipped with bootbox and installed as any third-party plugin is (the ``bootbox`` entry-point
group, ``esxi = "bootbox_esxi"``), using nothing but ``bootbox``'s public API: it is the proof
that the plugin contract is enough for vSphere Auto Deploy's job without vCenter.

* ``bootbox depot add`` imports offline bundles, online depots and folders of VIBs, verifying
  every VIB and storing each payload once (``depot.py``, ``vib.py``, ``catalog.py``);
* an image profile is a bootbox profile of kind ``esxi``, checked against Image Builder's
  rules (``imageprofile.py``); plugins inject VIBs per host (``hostimage.py``);
* a host booting one gets an iPXE script chaining mboot (``script.py``) with its own boot.cfg
  (``bootcfg.py``), modules and a regenerated imgdb.tgz (``imgdb.py``), cacheable by nginx;
* stateless hosts call in from a per-host, per-boot boot module (``callin.py``); install-mode
  hosts get a kickstart rendered from their host profile (``kickstart.py``), with a
  ``%firstboot`` call-in, through the core's single-use answer URL.

See ``docs/esxi.md``. The entry point registers this module; its hooks are those of one
:class:`~bootbox_esxi.plugin.EsxiPlugin`, whose state lives from ``bootbox_startup`` to
``bootbox_shutdown`` (so sequential appliances in one process each get a fresh one).
"""

from __future__ import annotations

from bootbox_esxi.kind import KIND
from bootbox_esxi.plugin import EsxiPlugin

__version__ = "0.1.0"

_plugin = EsxiPlugin()

bootbox_configure = _plugin.bootbox_configure
bootbox_startup = _plugin.bootbox_startup
bootbox_shutdown = _plugin.bootbox_shutdown
bootbox_register_profile_kinds = _plugin.bootbox_register_profile_kinds
bootbox_register_routes = _plugin.bootbox_register_routes
bootbox_register_commands = _plugin.bootbox_register_commands
bootbox_image_inject = _plugin.bootbox_image_inject
bootbox_boot_script = _plugin.bootbox_boot_script
bootbox_profile_asset = _plugin.bootbox_profile_asset
bootbox_register_answer_kinds = _plugin.bootbox_register_answer_kinds
bootbox_render_answer_file = _plugin.bootbox_render_answer_file
bootbox_register_answer_inputs = _plugin.bootbox_register_answer_inputs
bootbox_host_up = _plugin.bootbox_host_up

__all__ = ["KIND", "EsxiPlugin", "__version__"]
