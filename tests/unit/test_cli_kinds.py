"""The names `kagent get/describe` take for a kind come from the API types — the same names
kubectl takes from the generated CRDs."""

from __future__ import annotations

from typing import ClassVar

import pytest
from typer.testing import CliRunner

from kagent.api import KINDS, Resource
from kagent.api.crd import all_crds
from kagent.cli.main import app
from kagent.cli.resources import KIND_BY_ALIAS, kind_aliases

# Every name the CLI took before its table was derived from the API types: none may stop working.
EARLIER_ALIASES = {
    "Agent": ("agents", "agent", "ag"),
    "Tool": ("tools", "tool", "tl"),
    "Memory": ("memories", "memory", "mem"),
    "Workflow": ("workflows", "workflow", "wf"),
    "WorkflowRun": ("runs", "run", "workflowruns", "workflowrun", "wfr"),
}


@pytest.mark.parametrize(("kind", "alias"), [
    (kind, alias) for kind, aliases in EARLIER_ALIASES.items() for alias in (*aliases, kind)])
def test_every_earlier_alias_still_names_its_kind(kind: str, alias: str) -> None:
    assert KIND_BY_ALIAS[alias.lower()] == kind


def test_the_aliases_are_exactly_what_kubectl_accepts_from_the_crds() -> None:
    from_crds = {}
    for crd in all_crds().values():
        names = crd["spec"]["names"]
        for alias in (names["plural"], names["singular"], *names["shortNames"],
                      names["kind"].lower()):
            from_crds[alias] = names["kind"]
    assert from_crds == KIND_BY_ALIAS


def test_a_name_two_kinds_claim_is_refused() -> None:
    class Gadget(Resource):
        kind_name: ClassVar[str] = "Gadget"
        plural: ClassVar[str] = "gadgets"
        short_names: ClassVar[tuple[str, ...]] = ("ag",)

    with pytest.raises(ValueError, match="'ag' names both Agent and Gadget"):
        kind_aliases([*KINDS, Gadget])


@pytest.mark.parametrize("alias", sorted({a for names in EARLIER_ALIASES.values() for a in names}))
def test_the_cli_accepts_every_alias(alias: str) -> None:
    # No cluster: an accepted kind gets as far as loading the kubeconfig (exit 1); an unknown
    # one is a usage error (exit 2) before that.
    result = CliRunner().invoke(app, ["get", alias, "--kubeconfig", "/nonexistent/kubeconfig"])
    assert result.exit_code == 1, result.output
    assert "kubeconfig" in result.output


def test_an_unknown_kind_lists_the_real_ones() -> None:
    result = CliRunner().invoke(app, ["get", "gadgets"])
    assert result.exit_code == 2
    assert "agents, tools, memories, workflows, workflowruns" in result.output
