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


class Browser:
    """Headless chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`):
    a viewport of any width, emulated media features (`prefers-color-scheme`), scripts run in the
    page, clicks and form submissions, screenshots. No Node, no WebSocket library: the protocol is
    JSON messages separated by NUL bytes on the child's file descriptors 3 (in) and 4 (out).
    """

    def __init__(self, timeout: float = 60) -> None:
        import os

        self.timeout = timeout
        self._folder = tempfile.TemporaryDirectory()
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Out of the way of 3 and 4, so that the child's dup2 onto them clobbers nothing it needs.
        high = [os.dup2(fd, 100 + n) for n, fd in enumerate((to_child_r, from_child_w))]
        os.close(to_child_r)
        os.close(from_child_w)

        def wire() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [chromium(), *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._folder.name}/profile", "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire, pass_fds=(3, 4),
        )
        for fd in high:
            os.close(fd)
        self._buffer = b""
        self._next = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        import os

        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._folder.cleanup()

    # --- the protocol ---

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        import os
        import select
        import time

        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise AssertionError(f"chromium did not answer {method} in {self.timeout} s")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise AssertionError(f"chromium went away during {method}")
            self._buffer += chunk

    # --- what tests do ---

    def viewport(self, width: int, height: int = 900, mobile: bool | None = None, scale: float = 1) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": width < 600 if mobile is None else mobile}, session=True)

    def color_scheme(self, scheme: str) -> None:
        """Emulate `prefers-color-scheme: scheme` ("light" or "dark")."""
        self.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}, session=True)

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_loaded()

    def show(self, page: str) -> None:
        """Load the HTML `page` (from a file, so that it is a page of its own)."""
        path = Path(self._folder.name) / f"page{self._next}.html"
        path.write_text(page, encoding="utf-8")
        self.open(path.as_uri())

    def wait_loaded(self, previous: str | None = None) -> None:
        """Until the document is complete (and, with `previous`, is not that URL's document any more)."""
        import time

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = self.evaluate("[document.readyState, location.href, window.__digest_marker === undefined]")
            if state[0] == "complete" and (previous is None or state[2]):
                return
            time.sleep(0.05)
        raise AssertionError("the page did not finish loading")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"the page's script failed: {result['exceptionDetails'].get('exception', {}).get('description', result['exceptionDetails'])}")
        return result["result"].get("value")

    def submit(self, script: str) -> None:
        """Run `script` (which submits a form) and wait for the next page."""
        self.evaluate("window.__digest_marker = 1")
        self.evaluate(script)
        self.wait_loaded(previous="submitted")

    def screenshot(self, path: Path, full_height: int | None = None) -> None:
        import base64

        params: dict = {"format": "png"}
        if full_height:
            width = self.evaluate("document.documentElement.clientWidth")
            height = min(full_height, self.evaluate("document.documentElement.scrollHeight"))
            params |= {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}
        data = self.send("Page.captureScreenshot", params, session=True)["data"]
        path.write_bytes(base64.b64decode(data))


#: JavaScript helpers for judging a page: the contrast of every piece of text against the
#: background it is drawn on, from computed styles (WCAG 2 relative luminance).
CONTRAST_SCRIPT = r"""
(() => {
  const parse = (c) => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const blend = (top, bottom) => { const a = top[3]; return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]); };
  const background = (el) => { const layers = []; for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor); if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let color = [255, 255, 255, 1]; const canvas = parse(getComputedStyle(document.documentElement).backgroundColor);
    if (canvas[3] > 0 && !layers.some(l => l[3] >= 1)) color = blend(canvas, color);
    for (let i = layers.length - 1; i >= 0; i--) color = blend(layers[i], color); return color; };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) { const node = walker.currentNode; const el = node.parentElement;
    if (!node.textContent.trim() || !el) continue; const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden" || el.closest("option, datalist, script, style, title")) continue;
    const bg = background(el); const fg = blend(parse(style.color), bg);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    out.push({text: node.textContent.trim().slice(0, 40), tag: el.tagName, cls: el.className, ratio: (a + 0.05) / (b + 0.05),
              color: style.color, background: `rgb(${bg.slice(0, 3).map(Math.round).join(", ")})`}); }
  return out;
})()
"""
