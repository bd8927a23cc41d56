"""``/api/v1``: the operator's JSON API, one blueprint per resource (the CLI is a client of it).

* :mod:`~bootbox.web.api.status` — the appliance: ``status``, recent ``events``, ``plugins``;
* :mod:`~bootbox.web.api.hosts` — hosts bootbox has seen, their timelines, forgetting one;
* :mod:`~bootbox.web.api.profiles` — image profiles (what hosts boot) and their kinds;
* :mod:`~bootbox.web.api.rules` — deploy rules, rule sets, compliance and repair;
* :mod:`~bootbox.web.api.hostprofiles` — host profiles, answers, renders, pushes, lint, and the
  two endpoints booting hosts call (answer files, the ``up`` report-in).

Reads are open; every write needs the API token unless its view is marked in
:mod:`bootbox.web.auth`. Views take the service from :mod:`bootbox.web.deps` and call only its
public methods. Input is validated and errors name the field; nothing is half-applied.
"""
