"""The vCD endpoint over HTTP(S): ``POST <url>/hosts/<mac>/prepare`` and ``…/unprepare``.

Standard library only (urllib), with basic auth from the config and a timeout on every
request. Errors are raised as :class:`bootbox.BootboxError` with a message that names the
endpoint and the status but never the credentials, because push errors go on the host's
timeline.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Mapping

from bootbox import BootboxError
from bootbox_vcd.config import VcdConfig


class VcdClient:
    def __init__(self, config: VcdConfig) -> None:
        self.config = config

    def _context(self) -> ssl.SSLContext | None:
        if not self.config.url.startswith("https://"):
            return None
        if not self.config.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.config.ca_file or None)

    def post(self, path: str, body: Mapping[str, Any], timeout: float) -> tuple[int, str]:
        """POST JSON; return (status, response text) for 2xx, raise BootboxError otherwise."""
        url = f"{self.config.url}{path}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        if self.config.username:
            pair = f"{self.config.username}:{self.config.password}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._context()) as reply:
                return reply.status, reply.read(4096).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read(200).decode("utf-8", "replace").strip().replace("\n", " ")
            raise BootboxError(f"vCD endpoint {url} answered HTTP {exc.code}" + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BootboxError(f"vCD endpoint {url} unreachable: {reason}") from None
