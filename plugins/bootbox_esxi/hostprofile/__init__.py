"""ESXi host profiles as configuration: the ``esxi`` host-profile kind, applied after every boot.

``schema`` validates a profile document (vSphere-API terms) into ``model``'s desired state;
``diff`` compares it with a host's live state (pure); ``vsphere`` reads and writes the live state
through the host's own vSphere API with pyVmomi; ``apply`` runs a diff/apply/read-back round and
says what happened per setting; ``watch`` notices reboots through ``runtime.bootTime``.
"""
