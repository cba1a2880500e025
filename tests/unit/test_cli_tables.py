"""Tables as kubectl prints them: names are never cut; other columns give way first."""

from __future__ import annotations

import io

from rich.console import Console

from kagent.cli.common import without_managed_fields
from kagent.cli.resources import object_name, table_rows
from kagent.cli.tables import Column, fit_widths, print_table
from kagent.cli.workflow import steps_view

LONG = "research-report-ai-agents-x7k2p"


def _printed(columns: list[Column], rows: list[list[str]], width: int) -> list[str]:
    out = io.StringIO()
    print_table(Console(file=out, width=width, color_system=None), columns, rows)
    return [line.rstrip() for line in out.getvalue().splitlines()]


def test_widths_fit_by_shrinking_the_widest_other_column_first() -> None:
    assert fit_widths([10, 30, 8], [10, 6, 5], available=40, gap=2) == [10, 18, 8]
    # A lower rank gives way first, however narrow it already is.
    assert fit_widths([10, 30, 8], [10, 6, 5], available=44, gap=2, ranks=[2, 2, 0]) == \
        [10, 25, 5]
    assert fit_widths([10, 30, 8], [10, 6, 5], available=100, gap=2) == [10, 30, 8]
    # Names alone wider than the terminal: the others at their floors, the names whole.
    assert fit_widths([50, 30, 8], [50, 6, 5], available=40, gap=2) == [50, 6, 5]


def test_a_name_is_never_cut_at_80_columns() -> None:
    docs = [{"metadata": {"name": LONG, "namespace": "ai-agents",
                          "creationTimestamp": "2026-01-01T00:00:00+00:00"},
             "spec": {"workflowRef": {"name": "research-report"}},
             "status": {"phase": "Failed", "reason": "StepFailed",
                        "message": "step write failed after 3 attempts: " + "x" * 80}}]
    columns, rows = table_rows("WorkflowRun", docs, all_namespaces=False, wide=False)
    lines = _printed(columns, rows, 80)
    assert lines[1].split()[0] == LONG
    assert all(len(line) <= 80 for line in lines)
    wide_columns, wide_rows = table_rows("WorkflowRun", docs, all_namespaces=True, wide=True)
    lines = _printed(wide_columns, wide_rows, 80)
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"] and "MESSAGE" in lines[0]
    assert lines[1].split()[:2] == ["ai-agents", LONG]
    assert "…" in lines[1]  # the message gave way, not the names


def test_names_wider_than_the_terminal_print_whole() -> None:
    name = "n" * 70
    lines = _printed([Column("NAME", keep=True), Column("WORKFLOW"), Column("PHASE")],
                     [[name, "research-report", "Succeeded"]], 40)
    assert lines[1].split()[0] == name


def test_the_watch_screen_keeps_step_names_at_80_columns() -> None:
    step = "analyze-market-competition"
    workflow = {"spec": {"steps": [{"name": step, "agent": "market-analyst-for-europe"}]}}
    run = {"metadata": {"name": "rr-1"}, "status": {"phase": "Running", "steps": [
        {"name": step, "phase": "Succeeded", "attempts": 1, "output": "word " * 40,
         "usage": {"inputTokens": 100, "outputTokens": 900}}]}}
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(steps_view(workflow, run, 80))
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    row = next(line for line in lines if line.startswith(step))
    assert row.split()[0] == step and "✓ Succeeded" in row and "1000" in row
    assert all(len(line) <= 80 for line in lines)


def test_name_output_and_managed_fields() -> None:
    doc = {"metadata": {"name": "writer", "managedFields": [{"manager": "kubectl"}]}}
    assert object_name(doc, "Agent") == "agent.kagent.dev/writer"
    assert object_name(doc, "WorkflowRun") == "workflowrun.kagent.dev/writer"
    assert without_managed_fields(doc) == {"metadata": {"name": "writer"}}
    assert doc["metadata"]["managedFields"]  # the input is left as it was



def test_printed_lines_carry_no_trailing_spaces() -> None:
    """`kagent get ... | cat` and diffs of it stay clean: rich pads cells, the print does not."""
    columns = [Column("NAME", keep=True), Column("MESSAGE")]
    out = io.StringIO()
    print_table(Console(file=out, width=200, color_system=None), columns,
                [["a", "a longer message than the next"], ["much-longer-name", "short"]])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line == line.rstrip() for line in lines)
    assert lines[2].endswith("short")
