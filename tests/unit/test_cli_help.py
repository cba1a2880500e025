"""Every user command answers --help, and bad usage exits with 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kagent.cli.main import app

COMMANDS = ["get", "describe", "logs", "invoke", "chat", "run", "install", "uninstall", "docs",
            "crds", "runtime", "controller", "mock-llm", "dev", "workflow", "dev up", "dev down",
            "dev status", "dev demo", "workflow run", "workflow output", "workflow cancel",
            "version"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_unknown_kind_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["get", "gadgets"])
    assert result.exit_code == 2


def test_missing_argument_is_a_usage_error() -> None:
    assert CliRunner().invoke(app, ["describe", "agent"]).exit_code == 2
