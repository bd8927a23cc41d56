"""Health: the appliance's services and their counters, boots by outcome, plugins, and the last
``bootbox doctor`` result (kept in the state dir by the doctor)."""

from __future__ import annotations

from bootbox.web.console.common import blueprint, page
from bootbox.web.deps import get_service, server_status


@blueprint.get("/health")
def health() -> str:
    service = get_service()
    counts = service.counts()
    tally = service.boot_tally()
    return page("console/health.html", servers=server_status(), counts=counts, tally=tally,
                plugins=service.plugins(), doctor=service.last_doctor_result(),
                event_streams=service.settings.http.event_streams)
