"""The vcd plugin's tests (``bootbox_vcd.tests``): collected by the repository's pytest run,
left out of the bootbox-vcd distribution (its pyproject.toml lists only ``bootbox_vcd``).

Inside the package rather than beside it (``plugins/bootbox_vcd/tests``) because a top-level
``tests`` package there would be the same module name as the repository's own ``tests``.
"""
