"""The package installs: a wheel built from this repository, installed into a fresh virtualenv
outside the checkout, lays out a project, ingests the sample feed and sends its digests.

Offline by design: the wheel is built without build isolation and installed without its
dependencies, which the fresh virtualenv then reads from the test environment's site-packages
(a `.pth` line, after its own). So this checks what the wheel carries (code, templates, starter
configuration), not how pip resolves dependencies from an index.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from email import policy
from html import escape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "digest", "digest_lab", "templates", "config")


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh virtualenv holding only the wheel built from this repository."""
    base = tmp_path_factory.mktemp("install")
    tree = base / "source"  # a copy, so that the build leaves nothing in the checkout
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    wheels = base / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, tree, cwd=base)
    (wheel,) = wheels.glob("digest-*.whl")

    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    fresh = Path(run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).stdout.strip())
    (fresh / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=base)
    return venv / "bin"


def test_the_wheel_holds_the_templates_and_the_starter_configuration(installed: Path, tmp_path: Path) -> None:
    found = run(installed / "python", "-c",
                "import digest, digest.settings as s; print(digest.__file__); print(s.PACKAGED_TEMPLATES)", cwd=tmp_path).stdout.split()
    package, templates = Path(found[0]), Path(found[1])
    assert installed.parent in package.parents, f"digest was imported from {package}, not from the wheel"
    assert installed.parent in templates.parents and (templates / "email" / "digest.html").is_file()
    assert (templates / "web" / "base.html").is_file()


def test_an_installed_digest_inits_ingests_and_sends_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = {"PATH": f"{installed}:{os.environ['PATH']}", "HOME": str(tmp_path), "LANG": "C.UTF-8"}  # no DIGEST_* from outside
    init = run(installed / "digest", "init", cwd=project, env=env)
    assert "starter configuration" in init.stdout
    assert (project / ".env").is_file() and (project / "config" / "digest.yaml").is_file()
    profiles = sorted(p.stem for p in (project / "config" / "subscribers").glob("*.yaml"))
    assert profiles, "no example profiles were laid out"
    assert not (project / "config" / "__init__.py").exists()

    ingest = run(installed / "digest", "ingest", "config/sample-feed.jsonl", cwd=project, env=env)
    assert "sample-feed.jsonl" in ingest.stdout
    run(installed / "digest", "profiles", "sync", cwd=project, env=env)
    run(installed / "digest", "send", cwd=project, env=env)

    messages = sorted((project / "var" / "outbox").glob("*.eml"))
    assert len(messages) == len(profiles)
    feed = (project / "config" / "sample-feed.jsonl").read_text(encoding="utf-8").splitlines()
    titles = {escape(json.loads(line)["title"], quote=False) for line in feed if line.strip()}
    for path in messages:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        html = message.get_body(("html",)).get_content()
        assert "<table" in html and any(title in html for title in titles), f"{path.name} shows no paper of the sample feed"
        assert message.get_body(("plain",)).get_content().strip()

    again = run(installed / "digest", "init", cwd=project, env=env)  # a project is never overwritten
    assert "starter configuration" not in again.stdout
