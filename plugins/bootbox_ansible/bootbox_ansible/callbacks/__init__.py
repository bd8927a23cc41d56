"""Ansible plugins that ``ansible-playbook`` loads from this directory (``ANSIBLE_CALLBACK_PLUGINS``).

They run inside the ``ansible-playbook`` process, never in bootbox's: only Ansible imports them.
"""
