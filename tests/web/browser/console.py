"""Driving the web console in a real headless Chromium, for tests (and the lead's QEMU version).

:func:`chromium` starts Debian's chromium through its chromedriver (Selenium), on loopback only:
every request that is not to loopback goes to a dead proxy, and the browser's own background
traffic (updates, sync, safe browsing) is switched off. :class:`Console` is the operator: it logs
in, opens pages, fills and submits forms, waits for what a page shows, and keeps a screenshot of
each step in the artifacts directory (``$BOOTBOX_ARTIFACTS/<test>``, else the test's tmp_path).

``LiveTimeline`` reads a host page's boot timeline as the page's script fills it: a QEMU test
opens the host page, boots the VM, and calls :meth:`LiveTimeline.wait_for_kinds` with the steps
it expects, exactly as the tests here do with boot steps made over HTTP and DHCP.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.lab_fixtures import lab_unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = (390, 844)
DESKTOP = (1360, 900)


def artifacts_dir(test_name: str, tmp_path: Path) -> Path:
    """Where a test's screenshots go: ``$BOOTBOX_ARTIFACTS/<test>`` (CI keeps it), else tmp_path."""
    root = os.environ.get("BOOTBOX_ARTIFACTS")
    where = Path(root) / test_name if root else tmp_path / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    return where


@contextmanager
def chromium(size: tuple[int, int] = DESKTOP, *, reach: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium WebDriver (fails under BOOTBOX_LAB_REQUIRED=1 when it cannot start).

    ``reach``: addresses besides loopback the browser may talk to directly, for a browser started
    inside a lab namespace (a thread that joined it, see ``Segment.call``) to reach an appliance at
    its 198.18.x.y address; everything else still goes to the dead proxy."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        lab_unavailable("browser tests need selenium (pip install -e '.[test]')")
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not (Path(tool).is_file() or shutil.which(tool)):
            lab_unavailable(f"browser tests need {tool} (apt install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a driver or browser
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--safebrowsing-disable-auto-update",
                 "--proxy-server=127.0.0.1:9",  # anything not on loopback (bypassed implicitly) goes nowhere
                 f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    if reach:
        options.add_argument("--proxy-bypass-list=" + ";".join(reach))
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    except Exception as exc:  # noqa: BLE001 - any start-up failure means no browser here
        lab_unavailable(f"chromium did not start through chromedriver: {str(exc).splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Console:
    """The console as an operator's browser sees it."""

    driver: Any
    url: str
    shots: Path
    taken: list[Path] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def text(self, selector: str = "main") -> str:
        return str(self.css(selector).text)

    def fill(self, selector: str, value: str) -> None:
        element = self.css(selector)
        element.clear()
        element.send_keys(value)

    def click(self, selector: str) -> None:
        self.css(selector).click()

    def submit_button(self, label: str) -> None:
        """Click the (first) button labelled ``label`` and wait for the next page."""
        from selenium.webdriver.common.by import By

        old = self.css("html")
        self.driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']").click()
        self.wait(lambda: _stale(old), f"a new page after clicking {label!r}")

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        """Poll ``condition`` until it is truthy; fail with ``what`` and a screenshot otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # noqa: BLE001 - the page is changing under us; try again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                shot = self.screenshot("timeout")
                raise AssertionError(f"waited {timeout:.0f} s for {what}; screenshot {shot}; page:\n{self.text('body')[:2000]}")
            time.sleep(0.1)

    def login(self, secret: str, user: str = "") -> None:
        """Log in through the form (the page the console redirected to, or /ui/login)."""
        if "/ui/login" not in self.driver.current_url:
            self.open("/ui/login")
        if user:
            self.fill("#user-name", user)
        self.fill("#password", secret)
        self.submit_button("Log in")
        self.wait(lambda: self.all("#user"), "the logged-in user in the header")

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{len(self.taken) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


def _stale(element: Any) -> bool:
    try:
        element.is_enabled()
        return False
    except Exception:  # noqa: BLE001 - StaleElementReferenceException: the page was replaced
        return True


@dataclass
class LiveTimeline:
    """A host page's boot timeline, read from the page as its script appends steps."""

    console: Console

    def rows(self) -> list[dict[str, str]]:
        found = []
        for row in self.console.all("#timeline tbody tr"):
            cells = [c.text for c in row.find_elements("css selector", "td")]
            if len(cells) == 5:
                found.append({"time": cells[0], "elapsed": cells[1], "step_time": cells[2], "kind": cells[3],
                              "message": cells[4], "live": "fresh" in (row.get_attribute("class") or "")
                              or bool(row.get_attribute("data-event-id"))})
        return found

    def wait_for_kinds(self, *kinds: str, timeout: float = 60.0) -> list[dict[str, str]]:
        """Wait until rows the script added (not the server) show each of ``kinds``, in order."""
        def done() -> list[dict[str, str]] | None:
            live = [r for r in self.rows() if r["live"]]
            seen = [r["kind"] for r in live]
            position = 0
            for kind in kinds:
                if kind not in seen[position:]:
                    return None
                position = seen.index(kind, position) + 1
            return live
        return self.console.wait(done, f"live timeline steps {kinds}", timeout)  # type: ignore[no-any-return]
