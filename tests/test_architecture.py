"""The architecture's size rules, checked by machine (issue 14): a module of `digest/` over 500
lines or a class over 250 is a sign that two concepts share a room. The layer rules are
import-linter's contracts in pyproject.toml, run by `make test`; what the command line loads at
start is checked here, since import-linter counts an import inside a function as any other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "digest"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations/versions" not in p.as_posix())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE.parent).as_posix())
def test_no_module_over_500_lines_and_no_class_over_250(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 500, f"{path.name}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= 250, f"{path.name}: class {node.name} has {size} lines"


def test_the_commands_that_never_rank_do_not_import_the_ranking_libraries() -> None:
    """`digest web` (a long-running process), `profiles sync`, `init`, `status` and `db` load the
    command line, the web app and the profiles, never scikit-learn (which pulls in scipy.stats)
    nor the send: about 2 s and 90 MB a process (`digest web`: 190 -> 98 MB resident)."""
    code = (
        "import sys, digest.cli, digest.web, digest.profiles, digest.status, digest.config, digest.migrations\n"
        "print(' '.join(sorted(m for m in ('sklearn', 'scipy', 'digest.send.run', 'digest.ranking') if m in sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
