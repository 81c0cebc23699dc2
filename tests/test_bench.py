"""The benchmark's own instruments: another commit's `digest send` side by side (`--compare`), and
the memory of a whole process tree with shared pages counted once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from digest import migrations
from digest.db import Database, make_engine
from digest_lab.bench import Checkout, World, bench_daily_run, build_world, checkout, ratios

CHECKOUT = Path(__file__).resolve().parent.parent
IN_GIT = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True).returncode == 0

# A parent touches 300 MB, then forks a child that keeps the same pages (copy-on-write) and both
# sleep: RSS summed over the two would say ~600 MB, the memory really used is ~300 MB.
SHARED = """
import os, sys, time
block = bytearray(300 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
if os.fork() == 0:
    time.sleep(3); os._exit(0)
print("ready", flush=True)
time.sleep(3)
os.wait()
"""

TOPICS = {
    "cs.CL": ["language", "translation", "parsing", "dialogue", "summarization", "tokenizer", "grammar", "speech"],
    "cs.CV": ["image", "segmentation", "detection", "video", "pixels", "camera", "depth", "texture"],
}


def test_the_memory_of_a_process_tree_counts_a_shared_page_once() -> None:
    from digest_lab.bench import TreeMemory

    process = subprocess.Popen([sys.executable, "-c", SHARED], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert process.stdout.readline().strip() == b"ready"
        memory = TreeMemory(process.pid)
        for _ in range(10):
            memory.sample()
            time.sleep(0.05)
    finally:
        process.wait(timeout=30)
    megabytes = memory.peak / 2**20
    assert 280 < megabytes < 420, f"{megabytes:.0f} MB for 300 MB shared by a parent and its forked child"
    assert memory.peak_root_rss / 2**20 > 280


def test_the_machine_cpu_counts_what_another_process_burns() -> None:
    from digest_lab.bench import machine_cpu_seconds

    spin = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"
    before = machine_cpu_seconds()
    subprocess.run([sys.executable, "-c", spin], check=True)
    spent = machine_cpu_seconds() - before
    assert spent >= 0.9, f"{spent:.2f} CPU s counted for a process that burned 1 s"


def test_compare_needs_a_commit_of_the_checkout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a commit"):
        checkout("no-such-ref-anywhere", tmp_path)


@pytest.mark.skipif(not IN_GIT, reason="not a git checkout: --compare unpacks commits of it")
def test_another_commit_sends_the_same_world_side_by_side(tmp_path: Path) -> None:
    feed = tmp_path / "2026-04-01.jsonl"
    with feed.open("w") as out:
        for n in range(260):
            category = "cs.CL" if n % 2 else "cs.CV"
            words = TOPICS[category]
            a, b, c = words[n % 8], words[(n // 2 + 3) % 8], words[(n // 3 + 5) % 8]
            out.write(json.dumps({"id": f"2604.{n:05d}", "categories": [category], "authors": [f"Author {n % 17}"],
                                  "title": f"{a.capitalize()} {b} with {c} models {n}",
                                  "summary": f"We study {a} {b} and {c}. Our method improves {b} {c} on three tasks."}) + "\n")
    world = build_world(tmp_path / "world.db", [feed], users=12, papers=80)
    (tmp_path / "no-config.yaml").write_text("sources: []\n")
    head = checkout("HEAD", tmp_path)
    assert (head.path / "digest" / "__main__.py").is_file()

    results = []
    for code in (None, head):
        copy = World(tmp_path / "run.db", world.users, world.papers, world.past_papers, world.now)
        copy.path.write_bytes(world.path.read_bytes())
        results.append(bench_daily_run(copy, tmp_path, code))
        copy.path.unlink()
    this, other = results
    assert other.code == head.label and not this.code
    for stage in results:
        assert "12 emails to the outbox" in stage.note, stage.note
        assert stage.peak_mb > 20 and stage.cpu_seconds and stage.cpu_seconds > 0.1
    [(code, items, mine, theirs)] = ratios(results)
    assert (code, items, mine, theirs) == (head.label, 12, this.seconds, other.seconds)


def test_a_commit_of_an_older_schema_gets_the_world_at_its_own_revision(tmp_path: Path) -> None:
    """`--compare` with a commit from before a migration: the world this checkout made is brought
    down to that commit's newest revision (its rows kept), as that commit's `digest send`
    requires. The older commit here: this checkout's revisions but the last."""
    versions = sorted(p for p in (Path(migrations.__file__).parent / "versions").glob("0*.py"))
    older = tmp_path / "older"
    (older / "digest" / "migrations" / "versions").mkdir(parents=True)
    for revision in versions[:-1]:
        shutil.copy(revision, older / "digest" / "migrations" / "versions" / revision.name)
    url = f"sqlite:///{tmp_path / 'world.db'}"
    db = Database(url)
    with db.engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO paper (title_key, title, abstract, authors, categories, source, first_seen) "
                                   "VALUES ('a paper', 'A paper', 'We propose a paper.', '[]', '[]', 'test', '2026-11-01 00:00:00')"))
    db.dispose()
    Checkout("older", "0" * 40, older).adopt(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        assert migrations.current(connection) == versions[-2].name.split("_")[0]
        assert connection.execute(sa.text("SELECT title FROM paper")).scalars().all() == ["A paper"]
    engine.dispose()
    Checkout("f1f4b40", "0" * 40, tmp_path / "no-migrations").adopt(url)  # before migrations: nothing to do
