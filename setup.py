"""Build the optional C helper of the TFTP server; everything else is declared in pyproject.toml.

``bootbox.net.tftp._tftpengine`` (bootbox/net/tftp/_tftpengine.c) serves TFTP blocks outside the
interpreter lock, so many lock-step transfers at once use every core (bootbox/net/tftp/engine.py).
It is ``optional``: without a C compiler and Python's headers (Debian: gcc, libc6-dev,
python3-dev) the install still succeeds, and the TFTP server serves every block from its
Python loop instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bootbox.net.tftp._tftpengine",
            sources=["bootbox/net/tftp/_tftpengine.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
