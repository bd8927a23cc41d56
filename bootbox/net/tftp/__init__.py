"""The read-only TFTP server for first-stage boot loaders.

:mod:`~bootbox.net.tftp.server` owns the socket and the transfers' loop,
:mod:`~bootbox.net.tftp.transfer` is one read transfer (options, windows, retransmission), and
:mod:`~bootbox.net.tftp.engine` runs the per-block work in C (``_tftpengine.c``, built by
setup.py when a compiler is present) outside the interpreter lock. Part of ``net``: files are
opened through a callable the appliance passes in.
"""
