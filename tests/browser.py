"""A real browser for the tests that judge a page: Debian's chromium, headless.

Tests that need it call `chromium()` and skip cleanly where it is missing; `.ci/run` installs it.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--mute-audio",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium here (CI installs Debian's chromium)")


def measure(page: str, width: int, script: str) -> dict:
    """Load `page` in an iframe `width` CSS pixels wide and return what `script` computes.

    `script` is a JavaScript expression over `doc` (the page's document) that yields a JSON-able
    value. Headless windows have a minimum width, so the iframe is what sets the viewport.
    """
    browser = chromium()
    wrapper = f"""<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" style="border:0;width:{width}px;height:2000px" srcdoc="{html.escape(page, quote=True)}"></iframe>
<script>
window.addEventListener("load", () => {{
  const doc = document.getElementById("f").contentDocument;
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = JSON.stringify({script});
  document.body.appendChild(out);
}});
</script></body></html>"""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.html"
        path.write_text(wrapper, encoding="utf-8")
        dom = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={folder}/profile", "--window-size=1280,2000",
             "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
    start = dom.find('<pre id="result">')
    if start < 0:
        raise AssertionError(f"the browser computed nothing; it printed:\n{dom[:2000]}")
    text = dom[start + len('<pre id="result">') : dom.index("</pre>", start)]
    return json.loads(html.unescape(text))
