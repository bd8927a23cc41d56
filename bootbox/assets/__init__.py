"""Files bootbox fetches or builds to boot with, beside the service rather than inside it.

Debian packages as a source of files (:mod:`~bootbox.assets.debian`), Debian's signed boot
loaders (:mod:`~bootbox.assets.signedloaders`, also ``python -m bootbox.signedloaders``) and the
demo payload a newcomer boots first (:mod:`~bootbox.assets.demo`, its shell scripts shipped as
files). It sits beside ``web`` and ``net`` in the layers: the appliance and the lab use it, and it
may import only the layers below (today it needs nothing but the errors).
"""
