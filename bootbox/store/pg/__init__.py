"""What several appliances sharing one PostgreSQL need beyond the document store.

* :mod:`.bootwriter` — the boot path's writes (hosts, events) to the database, through a local
  durable outbox (:mod:`bootbox.store.outbox`) whenever the database is away, with reconnection;
* :mod:`.hostlog` and :mod:`.journal` — the host log and the boot journal on that writer, behind
  the interfaces of the file-based ones (:class:`~bootbox.store.hostlog.HostLog`,
  :class:`~bootbox.store.journal.Journal`);
* :mod:`.changefeed` — LISTEN/NOTIFY: what other appliances change, brought into this one's memory.

With :mod:`bootbox.store.postgresql` these are the only modules that import psycopg.
"""
