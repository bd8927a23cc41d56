"""Pure renderers: the text bootbox itself writes for a booting host, strings in and strings out.

:mod:`~bootbox.core.render.ipxe` writes the iPXE scripts (the chain script, "no match", errors),
:mod:`~bootbox.core.render.grub` the GRUB loader kind's configs, and
:mod:`~bootbox.core.render.callin` the "call in" script a booted host runs to report up (plugins
embed it in their answer files). Boot kinds render their own scripts through hooks; these are the
ones that belong to no plugin. Part of the pure core: it imports only the model and the errors.
"""
