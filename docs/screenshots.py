"""Screenshots of a digest made from real data, for the README (`make screenshots`).

Ingests the April arXiv listings of ../shared/data/arxiv-daily (or DIGEST_BENCH_DATA) into a
fresh folder, sends the example subscriber Ada her digest of 10 April 2026 to an outbox, and
photographs its HTML in headless Chromium: a phone (390 px) and a desktop (1280 px), each in the
light and the dark scheme. The PNGs go to docs/; no paper text goes into any text file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from email import message_from_bytes, policy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import Browser  # noqa: E402 - after the path is set

DATA = Path(os.environ.get("DIGEST_BENCH_DATA", ROOT.parent / "shared" / "data" / "arxiv-daily"))
DATE = "2026-04-10"
SHOTS = {  # name: (width, height of the picture, scheme)
    "email-phone-light.png": (390, 1700, "light"),
    "email-phone-dark.png": (390, 1700, "dark"),
    "email-desktop-light.png": (1280, 1500, "light"),
    "email-desktop-dark.png": (1280, 1500, "dark"),
}


def digest(work: Path) -> str:
    """Ada's digest of DATE, sent to an outbox in `work` by the real commands: its HTML part."""
    shutil.copytree(ROOT / "config", work / "config")
    env = {**os.environ, "DIGEST_DATABASE_URL": f"sqlite:///{work / 'digest.db'}", "DIGEST_CONFIG": str(work / "config" / "digest.yaml"),
           "DIGEST_PROFILES": str(work / "config" / "subscribers"), "DIGEST_OUTBOX": str(work / "outbox"), "DIGEST_TEMPLATES": str(ROOT / "templates"),
           "DIGEST_SECRET_KEY": secrets.token_urlsafe(32),  # a throwaway key: a weak one is refused
           "DIGEST_BASE_URL": "https://digest.example.org", "DIGEST_FROM": "Paper Digest <digest@example.org>"}
    files = sorted(DATA.glob("*.jsonl"))
    if not files:
        sys.exit(f"no listings in {DATA} (set DIGEST_BENCH_DATA)")

    def digest_cli(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "digest", *args], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)

    digest_cli("ingest", *map(str, files))
    digest_cli("profiles", "sync")
    digest_cli("send", "--date", DATE, "--only", "ada@example.org")
    [eml] = (work / "outbox").glob("*.eml")
    return message_from_bytes(eml.read_bytes(), policy=policy.default).get_body(("html",)).get_content()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="digest-shots-") as folder:
        html = digest(Path(folder))
    with Browser() as browser:
        for name, (width, height, scheme) in SHOTS.items():
            browser.viewport(width, 900)
            browser.color_scheme(scheme)
            browser.show(html)
            browser.screenshot(ROOT / "docs" / name, full_height=height)
            print(f"docs/{name}")


if __name__ == "__main__":
    main()
