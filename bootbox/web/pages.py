"""The small web page: hosts, their state and the latest boot steps, for people."""

from __future__ import annotations

import time

from flask import Blueprint, render_template

from bootbox.version import __version__
from bootbox.web.deps import get_service

blueprint = Blueprint("pages", __name__)


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@blueprint.get("/")
def index() -> str:
    service = get_service()
    return render_template(
        "index.html",
        version=__version__,
        hosts=service.list_hosts(),
        profiles=service.profiles(),
        events=list(reversed(service.recent_events(50))),
        clock=_clock,
    )
