"""The command line: every command's help works, and without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from geosam.cli import cli

COMMANDS = sorted(cli.commands)


def test_commands_are_registered() -> None:
    assert {"tile", "synth"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from geosam.cli import cli\n"
        "for name in [None, *cli.commands]:\n"
        "    args = [name, '--help'] if name else ['--help']\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'segment_anything') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "geosam" in result.output
