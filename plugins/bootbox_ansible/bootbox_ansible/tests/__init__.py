"""The ansible plugin's tests (``bootbox_ansible.tests``): collected by the repository's pytest run,
left out of the bootbox-ansible distribution (its pyproject.toml lists only ``bootbox_ansible``).

``support`` is shared with the QEMU test of Linux images (its Ansible step).
"""
