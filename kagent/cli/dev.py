"""`kagent dev`: a local control plane for trying Kagent without a cluster."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run Kagent locally on a real control plane.", no_args_is_help=True)
