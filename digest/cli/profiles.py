"""`digest profiles validate|sync`: the subscribers' YAML files, checked or loaded."""

from __future__ import annotations

import sys

import click

from ..profiles import load_profiles, sync_profiles
from .app import BAD_INPUT, OK, App, console, errors


@click.group()
def profiles() -> None:
    """Check the subscriber profiles or load them into the database."""


@profiles.command()
@click.pass_obj
def validate(app: App) -> None:
    """Check every profile file; exit 2 when any is invalid."""
    loaded = load_profiles(app.settings.profiles_dir)
    for path, profile in loaded.profiles.items():
        console.print(f"[green]ok[/]      {path} ({profile.email})", highlight=False)
    for error in loaded.errors:
        console.print(f"[red]invalid[/] {error}", highlight=False)
    console.print(f"{len(loaded.profiles)} valid, {len(loaded.errors)} invalid.")
    sys.exit(BAD_INPUT if loaded.errors else OK)


@profiles.command()
@click.pass_obj
def sync(app: App) -> None:
    """Load the valid profiles into the database; invalid files are reported and skipped (exit 2)."""
    errors_found = run_sync(app)
    sys.exit(BAD_INPUT if errors_found else OK)


def run_sync(app: App) -> int:
    report = sync_profiles(app.db, app.settings.profiles_dir)
    for error in report.errors:
        errors.print(f"[red]invalid profile[/] {error}", highlight=False)
    parts = [f"{len(report.added)} added", f"{len(report.updated)} updated", f"{len(report.unchanged)} unchanged"]
    if report.deactivated:
        parts.append(f"{len(report.deactivated)} deactivated (file removed)")
    if report.kept_unsubscribed:
        parts.append(f"{len(report.kept_unsubscribed)} kept unsubscribed")
    if report.errors:
        parts.append(f"{len(report.errors)} invalid file{'s' if len(report.errors) > 1 else ''} skipped")
    console.print("Profiles: " + ", ".join(parts) + ".")
    return len(report.errors)
