"""Host profiles and answers in the service: what makes each host itself.

:mod:`~bootbox.service.answers.books` keeps host profiles and each host's answers in the store,
:mod:`~bootbox.service.answers.files` turns them into the answer files a host fetches while it
installs or boots (through the ``bootbox_render_answer_file`` hook), and
:mod:`~bootbox.service.answers.tokens` mints the single-use tokens in those files' URLs. Part of
the service layer: it may import the hooks, the store, the core and the bottom layers.
"""
