"""``bootbox doctor``: why network boot would fail here, with the fix for each problem.

:mod:`~bootbox.doctor.checks` runs the checks (ports and capabilities, loaders, addresses, other
DHCP servers, Secure Boot, the store, the TFTP engine); :mod:`~bootbox.doctor.machine` reads what
they need about the appliance's own machine (listening sockets and their owners, processes,
capabilities, file locks, interfaces; it was ``hostinfo.py``); :mod:`~bootbox.doctor.client`
walks the boot path as a PXE client would. A tool beside the appliance: it sits above it in the
layers with ``lab`` and ``testing``, may import anything below (the DHCP packet codec and probe,
the interface address, the state-dir lock, the settings) and is imported only by the CLI.
"""
