"""Profiles: the format of DESIGN.md, with errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from digest.config import load_config
from digest.models import Subscriber
from digest.profiles import load_profiles, sync_profiles
from digest.yamlfile import FileError

from .conftest import ROOT, Workdir


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
email: Grace@Example.org
name: Grace
timezone: Pacific/Kiritimati
send_at: 6:30
max_items: 12
interests:
  - graph neural networks
  - {phrase: molecular property prediction, weight: 2}
avoid: [survey]
authors: [Farah Siddiqui]
categories: [cs.LG, q-bio.BM]
"""


def test_a_full_profile_is_read_as_written(tmp_path: Path) -> None:
    write(tmp_path, "grace.yaml", GOOD)
    loaded = load_profiles(tmp_path)
    assert loaded.errors == []
    profile = loaded.profiles[str(tmp_path / "grace.yaml")]
    assert profile.email == "grace@example.org"
    assert profile.timezone == "Pacific/Kiritimati"
    assert profile.send_at == "06:30"  # unquoted 6:30 is a time, not YAML 1.1's base-60 number 390
    assert [(i.phrase, i.weight) for i in profile.interests] == [("graph neural networks", 1.0), ("molecular property prediction", 2.0)]
    assert profile.avoid == ["survey"] and profile.authors == ["Farah Siddiqui"] and profile.categories == ["cs.LG", "q-bio.BM"]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("email: a@example.org\ninterests: [x]\ntimezon: UTC\n", 3, "timezon", "unknown key"),
        ("email: not-an-address\ninterests: [x]\n", 1, "email", "email address"),
        ("email: a@example.org\ntimezone: Europe/Londn\ninterests: [x]\n", 2, "timezone", "unknown time zone 'Europe/Londn'"),
        ("email: a@example.org\ninterests:\n  - x\n  - {phrase: y, weight: -1}\n", 4, "interests[1].weight", "greater than 0"),
        ("email: a@example.org\ninterests:\n  - x\n  - {phrase: y, wieght: 2}\n", 4, "interests[1].wieght", "unknown key"),
        ("email: a@example.org\n", 1, "interests", "required"),
        ("email: a@example.org\ninterests: []\n", 2, "interests", "at least 1"),
        ("email: a@example.org\ninterests: [x]\nmax_items: 80\n", 3, "max_items", "less than or equal to 50"),
        ("email: a@example.org\ninterests: [x]\nsend_at: '25:00'\n", 3, "send_at", "HH:MM"),
        ("email: a@example.org\ninterests: [x]\ncategories: [computer science]\n", 3, "categories", "arXiv category"),
        ("email: a@example.org\ninterests: [x]\nactive: maybe\n", 3, "active", "boolean"),
        # Values that reach a header (the name, in To:) or a page: one line of plain text.
        ('email: a@example.org\nname: "Ada\\r\\nBcc: everyone@example.org"\ninterests: [x]\n', 2, "name", "control character (U+000D)"),
        ('email: a@example.org\nname: "Ada\\x1b[31m"\ninterests: [x]\n', 2, "name", "control character (U+001B)"),
        ('email: a@example.org\nname: "Ada\\u2028Lovelace"\ninterests: [x]\n', 2, "name", "control character (U+2028)"),
        ('email: a@example.org\ninterests:\n  - x\n  - "bell\\a"\n', 4, "interests[1].phrase", "control character (U+0007)"),
        ('email: a@example.org\ninterests: [x]\nauthors: ["Ada\\0Lovelace"]\n', 3, "authors", "control character (U+0000)"),
        # Bounded: a few dozen phrases serve anyone.
        ("email: a@example.org\ninterests: [" + ", ".join(f"topic {n}" for n in range(101)) + "]\n", 2, "interests", "at most 100 items"),
        ("email: a@example.org\ninterests: [x]\navoid: [" + ", ".join(f"topic {n}" for n in range(101)) + "]\n", 3, "avoid", "at most 100 items"),
        ("email: a@example.org\ninterests: [x]\nauthors: [" + "a" * 201 + "]\n", 3, "authors", "at most 200 characters"),
        ("email: a@example.org\ninterests: [" + "a" * 201 + "]\n", 2, "interests[0].phrase", "at most 200 characters"),
    ],
)
def test_an_invalid_profile_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    loaded = load_profiles(tmp_path)
    assert loaded.profiles == {}
    [error] = loaded.errors
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert words in error.message
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_a_huge_profile_is_refused_before_it_is_read_and_the_others_are_served(workdir: Workdir) -> None:
    folder = workdir.path / "config" / "subscribers"
    # 392,261 interests took 79 s and 857 MB to sync, and slowed every send 4 times.
    write(folder, "huge.yaml", "email: huge@example.org\ninterests:\n" + "".join(f"  - phrase number {n}\n" for n in range(392_261)))
    loaded = load_profiles(folder)
    [error] = loaded.errors
    assert (Path(error.path).name, error.line) == ("huge.yaml", 1) and "a profile may be at most 256 KB" in error.message
    assert len(loaded.profiles) == 4
    result = workdir.cli("profiles", "sync")
    assert result.returncode == 2 and "huge.yaml:1: the file is" in result.stderr and "4 added" in result.stdout


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "email: a@example.org\ninterests:\n  - x\n  - [unclosed\nname: z\n")
    [error] = load_profiles(tmp_path).errors
    assert error.path == str(path)
    assert error.line in (4, 5)
    assert "not valid YAML" in error.message


def test_one_broken_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", "email: b@example.org\ninterests: [robots]\ntimezone: Mars/Olympus\n")
    write(tmp_path, "c.yml", "email: c@example.org\ninterests: [quantum error correction]\n")
    write(tmp_path, "notes.txt", "not a profile")
    loaded = load_profiles(tmp_path)
    assert sorted(p.email for p in loaded.profiles.values()) == ["c@example.org", "grace@example.org"]
    assert [Path(e.path).name for e in loaded.errors] == ["b.yaml"]


def test_the_same_address_in_two_files_is_an_error_of_the_second(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "email: same@example.org\ninterests: [x]\n")
    write(tmp_path, "b.yaml", "name: B\nemail: SAME@example.org\ninterests: [y]\n")
    loaded = load_profiles(tmp_path)
    [error] = loaded.errors
    assert (Path(error.path).name, error.line, error.field) == ("b.yaml", 2, "email")
    assert "a.yaml" in error.message


def test_the_example_profiles_are_valid_and_varied() -> None:
    loaded = load_profiles(ROOT / "config" / "subscribers")
    assert loaded.errors == []
    profiles = list(loaded.profiles.values())
    assert len(profiles) >= 3
    assert len({p.timezone for p in profiles}) == len(profiles)
    phrases = [{i.phrase for i in p.interests} for p in profiles]
    assert all(a.isdisjoint(b) for n, a in enumerate(phrases) for b in phrases[n + 1 :])


def test_sync_adds_updates_and_deactivates(workdir: Workdir) -> None:
    folder = workdir.path / "profiles"
    write(folder, "a.yaml", "email: a@example.org\ninterests: [robots]\n")
    write(folder, "b.yaml", "email: b@example.org\ninterests: [proteins]\n")
    db = workdir.db()
    report = sync_profiles(db, folder)
    assert sorted(report.added) == ["a@example.org", "b@example.org"]

    write(folder, "a.yaml", "email: a@example.org\ninterests: [robots, drones]\nmax_items: 3\n")
    (folder / "b.yaml").unlink()
    report = sync_profiles(db, folder)
    assert report.updated == ["a@example.org"] and report.deactivated == ["b@example.org"]
    with db.session() as session:
        rows = {s.email: s for s in session.exec(select(Subscriber))}
    assert rows["a@example.org"].max_items == 3
    assert [i["phrase"] for i in rows["a@example.org"].interests] == ["robots", "drones"]
    assert rows["b@example.org"].active is False

    assert sync_profiles(db, folder).unchanged == ["a@example.org"]


def test_a_profile_broken_later_keeps_its_last_valid_settings(workdir: Workdir) -> None:
    folder = workdir.path / "profiles"
    write(folder, "a.yaml", "email: a@example.org\ninterests: [robots]\n")
    db = workdir.db()
    sync_profiles(db, folder)
    write(folder, "a.yaml", "email: a@example.org\ninterests: [robots]\nmax_itmes: 3\n")
    report = sync_profiles(db, folder)
    assert [(Path(e.path).name, e.line, e.field) for e in report.errors] == [("a.yaml", 3, "max_itmes")]
    assert report.deactivated == []
    with db.session() as session:
        subscriber = session.exec(select(Subscriber)).one()
    assert subscriber.active and subscriber.max_items == 10


def test_cli_validate_exits_2_and_names_the_file_and_line(workdir: Workdir) -> None:
    assert workdir.cli("profiles", "validate").returncode == 0
    write(workdir.path / "config" / "subscribers", "zz-typo.yaml", "email: z@example.org\ninterests: [x]\nsend_at: noon\n")
    result = workdir.cli("profiles", "validate")
    assert result.returncode == 2
    assert "zz-typo.yaml:3: send_at:" in result.stdout
    assert "ada.yaml" in result.stdout  # the valid ones are still listed as valid


@pytest.mark.parametrize(
    ("source", "line", "field", "words"),
    [
        ("    poll_at: ['06:00', '6:5']\n", 4, "sources[0].poll_at[1]", 'expected a local time written as "HH:MM" (24-hour)'),
        ("    poll_at: '24:00'\n", 4, "sources[0].poll_at[0]", 'expected a local time written as "HH:MM" (24-hour)'),
        ("    timezone: Europe/Londn\n", 4, "sources[0].timezone", "unknown time zone 'Europe/Londn' (use an IANA name such as Europe/Berlin)"),
    ],
)
def test_config_times_and_zones_are_checked_as_in_profiles(tmp_path: Path, source: str, line: int, field: str, words: str) -> None:
    path = tmp_path / "digest.yaml"
    path.write_text("sources:\n  - name: feed\n    url: feed.jsonl\n" + source, encoding="utf-8")
    with pytest.raises(FileError) as caught:
        load_config(path)
    error = caught.value
    assert (Path(error.path).name, error.line, error.field) == ("digest.yaml", line, field), str(error)
    assert words in error.message


def test_config_times_are_written_out_in_full(tmp_path: Path) -> None:
    path = tmp_path / "digest.yaml"
    path.write_text("sources:\n  - name: feed\n    url: feed.jsonl\n    poll_at: '6:05'\n    timezone: Asia/Tokyo\n", encoding="utf-8")
    (source,) = load_config(path).sources
    assert source.poll_at == ["06:05"] and source.timezone == "Asia/Tokyo"


def test_a_first_digest_cannot_look_back_further_than_any_digest(tmp_path: Path) -> None:
    path = tmp_path / "digest.yaml"
    path.write_text("ranking:\n  fit_days: 90\n  lookback_days: 21\n", encoding="utf-8")
    with pytest.raises(FileError) as caught:
        load_config(path)
    assert (caught.value.line, caught.value.field) == (1, "ranking")
    assert caught.value.message == "lookback_days (21) cannot exceed max_window_days (14)"
    path.write_text("ranking:\n  lookback_days: 21\n  max_window_days: 30\n", encoding="utf-8")
    assert load_config(path).ranking.max_window_days == 30
