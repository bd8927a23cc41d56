"""Boot events out: ``/api/v1/events/stream`` on a live appliance, read with a real HTTP client
(http.client over a socket): events arrive live, a reconnect with ``Last-Event-ID`` gets what it
missed (across a restart too: the IDs are stable), filters hold, and ``[http] event_streams``
caps the streams without taking the threads that serve boot files."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bootbox.testing import TestAppliance, http as http_request, start_test_appliance

MAC = "52:54:00:e7:00:19"
OTHER = "52:54:00:e7:00:20"


class Stream:
    """One SSE connection, parsed event by event."""

    def __init__(self, appliance: TestAppliance, query: str = "", last_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", appliance.settings.http.port, timeout=10)
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.conn.request("GET", f"/api/v1/events/stream{query}", headers=headers)
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        self.comments: list[str] = []

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (comments and ``retry:`` lines kept aside)."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()  # the chunked framing undone
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if not line:
                if "data" in fields:
                    return {"id": fields.get("id"), "event": fields.get("event"), **json.loads(fields["data"])}
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [self.next_event(timeout) for _ in range(count)]

    def close(self) -> None:
        self.response.close()  # the response's file holds the socket open until it is closed too
        self.conn.close()


def open_stream(appliance: TestAppliance, query: str = "", last_id: str | None = None) -> Stream:
    """A stream, once a slot is free: a closed stream's slot comes back when the server notices
    its client is gone (within a second of waiting)."""
    deadline = time.monotonic() + 10
    while True:
        stream = Stream(appliance, query, last_id)
        if stream.response.status != 503 or time.monotonic() > deadline:
            return stream
        stream.close()
        time.sleep(0.2)


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[TestAppliance]:
    running = start_test_appliance(tmp_path / "state", [], {"http": {"event_streams": 2, "event_heartbeat": 1.0}},
                                   None)
    try:
        yield running
    finally:
        running.appliance.stop()


def test_events_arrive_live_filtered_and_resume_with_last_event_id(appliance: TestAppliance) -> None:
    appliance.add_fake_profile()
    host, other = appliance.host(MAC), appliance.host(OTHER)
    stream = Stream(appliance, f"?host={MAC}")
    assert stream.response.status == 200
    assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
    other.boot()  # filtered out
    host.boot()
    live = stream.events(2)
    assert [e["event"] for e in live] == ["rules", "http.script"] and all(e["mac"] == MAC for e in live)
    assert int(live[0]["id"]) < int(live[1]["id"]) and live[1]["data"]["profile"] == "fake"
    stream.close()

    assert host.report_up() in (200, 503)  # while nobody listens
    resumed = open_stream(appliance, f"?host={MAC}", last_id=live[-1]["id"])
    missed = resumed.next_event()
    assert missed["event"] == "booted" and int(missed["id"]) > int(live[-1]["id"])
    assert _heartbeat(resumed)  # idle now: heartbeats only
    resumed.close()

    kinds = open_stream(appliance, "?kind=booted&since=0")  # a kind filter, from the start of the ring
    assert [(e["event"], e["mac"]) for e in kinds.events(1)] == [("booted", MAC)]
    kinds.close()


def _heartbeat(stream: Stream, timeout: float = 10.0) -> bool:
    """Whether an idle stream sends a heartbeat comment (and nothing else) within ``timeout``."""
    stream.sock.settimeout(timeout)
    while True:
        line = stream.response.readline().decode().rstrip("\n")
        if line == ": heartbeat":
            return True
        if line and not line.startswith(":"):
            return False


def test_event_ids_are_stable_across_a_restart(tmp_path: Path) -> None:
    first = start_test_appliance(tmp_path / "state", [], {"http": {"event_heartbeat": 1.0}}, None)
    try:
        first.add_fake_profile()
        first.host(MAC).boot()
        stream = Stream(first, f"?host={MAC}&since=0")
        before = stream.events(2)
        stream.close()
    finally:
        first.appliance.stop()
    second = start_test_appliance(tmp_path / "state", [], {"http": {"event_heartbeat": 1.0}}, None)
    try:
        again = Stream(second, f"?host={MAC}&since=0")
        assert [(e["id"], e["event"]) for e in again.events(2)] == [(e["id"], e["event"]) for e in before]
        again.close()
        resumed = Stream(second, f"?host={MAC}", last_id=before[0]["id"])  # missed the second one
        assert resumed.next_event()["id"] == before[1]["id"]
        resumed.close()
    finally:
        second.appliance.stop()


def test_the_stream_cap_holds_and_boot_files_are_still_served(appliance: TestAppliance) -> None:
    appliance.add_fake_profile()
    streams = [Stream(appliance), Stream(appliance)]
    assert [s.response.status for s in streams] == [200, 200]
    third = Stream(appliance)
    assert third.response.status == 503 and third.response.getheader("Retry-After") == "5"
    assert "event_streams" in third.response.read().decode()
    third.close()
    # The two streams hold their own threads: a host's script and the API answer at once.
    assert http_request("GET", f"{appliance.url}/boot/hosts/{MAC}/script.ipxe").status == 200
    assert http_request("GET", f"{appliance.url}/boot.ipxe").status == 200
    assert [s.next_event()["event"] for s in streams] == ["rules", "rules"]
    streams[0].close()
    again = open_stream(appliance)  # the closed stream's slot comes back
    assert again.response.status == 200
    again.close()
    streams[1].close()
