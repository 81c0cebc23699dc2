"""The lab's commands are offered by `digest` and say what to install when their extra is missing."""

from __future__ import annotations

import subprocess
import sys

# Runs `digest ARGS` with the named modules made unimportable (as if not installed).
WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None
from digest.cli import main
main(sys.argv[2:], prog_name="digest")
"""


def digest_without(modules: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def test_the_lab_commands_are_offered_with_their_help() -> None:
    listed = digest_without("", "--help")
    assert listed.returncode == 0
    for name in ("eval", "simulate", "bench"):
        assert f"  {name} " in listed.stdout, listed.stdout
        assert digest_without("", name, "--help").returncode == 0


def test_bench_without_aiosmtpd_says_what_to_install() -> None:
    result = digest_without("aiosmtpd", "bench", "--users", "1")
    assert result.returncode == 2
    assert "pip install 'digest[lab]'" in result.stderr and "Traceback" not in result.stderr


def test_simulate_plot_without_matplotlib_says_what_to_install(tmp_path) -> None:
    result = digest_without("matplotlib", "simulate", str(tmp_path), "--plot", str(tmp_path / "ctr.png"))
    assert result.returncode == 2
    assert "pip install 'digest[lab]'" in result.stderr and "Traceback" not in result.stderr


def test_without_the_lab_its_commands_say_so() -> None:
    result = digest_without("digest_lab,digest_lab.cli", "eval", "somewhere")
    assert result.returncode == 2
    assert "eval could not be loaded" in result.stderr and "pip install 'digest[lab]'" in result.stderr and "Traceback" not in result.stderr
