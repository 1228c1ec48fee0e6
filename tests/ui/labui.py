"""Helpers shared by the real-browser tests: JupyterLab's REST API and waiting in the page."""

from __future__ import annotations

import json
import time
import urllib.request

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def api(url: str, path: str, body: dict | None = None, method: str = "POST"):
    """Call JupyterLab's REST API (token and XSRF checks are off in the ``lab`` fixture)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status in (200, 201, 204), (path, r.status)
        raw = r.read()
    return json.loads(raw) if raw else None


def write_notebook(root, name: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nbformat.write(nb, str(root / name))


def start_session(url: str, path: str) -> None:
    """Create the notebook's session first, so Lab attaches to a running kernel on open."""
    api(url, "/api/sessions", {"path": path, "type": "notebook", "name": path,
                               "kernel": {"name": "python3"}})


def stop_sessions(url: str, path: str) -> None:
    """Delete the sessions of ``path`` (their kernels shut down)."""
    for s in api(url, "/api/sessions", method="GET"):
        if s["path"].endswith(path):
            api(url, f"/api/sessions/{s['id']}", method="DELETE")


def wait(page, selector: str, timeout: float) -> None:
    """Wait for ``selector``, accepting a "Select Kernel" dialog if Lab shows one anyway."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.locator(".jp-Dialog .jp-mod-accept").count():
            page.click(".jp-Dialog .jp-mod-accept")
        if page.locator(selector).count():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {selector}")


def _started(page) -> bool:
    """Some cell is running or queued ("[*]") or the kernel reports busy."""
    return bool(page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count()
                or page.locator(".jp-InputPrompt:has-text('*')").count())


def run_all(page, url: str, path: str, until: str, timeout: float, attempts: int = 3) -> None:
    """Open ``path`` in a fresh workspace (only this notebook), "Run All Cells", wait up to
    ``timeout`` s for ``until``. "Run All" is retried only when no cell started within 60 s (Lab
    may still be connecting the kernel at the first try): a retry while cells run would queue a
    second full run behind the first (on a loaded machine that never ends)."""
    page.goto(f"{url}/lab/tree/{path}?reset")
    for attempt in range(attempts):
        wait(page, ".jp-Notebook-ExecutionIndicator[data-status='idle']", 90)
        time.sleep(2)
        wait(page, ".jp-Notebook-ExecutionIndicator[data-status='idle']", 60)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            wait(page, until, min(timeout, 60))
            return
        except AssertionError:
            if _started(page):
                wait(page, until, timeout)
                return
            if attempt == attempts - 1:
                raise
