"""The linux plugin's tests (``bootbox_linux.tests``): collected by the repository's pytest run,
left out of the installed package (pyproject.toml, ``[tool.setuptools.packages.find]``)."""
