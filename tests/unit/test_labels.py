"""Each label, annotation and well-known name is spelled once, in kagent/api/labels.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from kagent.api import labels

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "kagent"

# The distinctive ones: a literal equal to any of these outside labels.py is a second definition.
# (Short words such as "kagent" are everywhere with other meanings; the API group is api/base.py's.)
NAMES = {
    value: name for name, value in vars(labels).items()
    if name.isupper() and isinstance(value, str) and value not in ("kagent", "kagent.dev")
}

# Literals that mean something else, though spelled the same.
OTHER_MEANINGS = {
    ("kagent/workflow/tracing.py", "kagent-controller"),  # the OpenTelemetry service name
    ("kagent/controller/mcp_discovery.py", "kagent-controller"),  # who calls MCP servers
    ("kagent/webhook/server.py", "kagent-webhook-ca"),  # the CA certificate's common name
}
# In code that is being rewritten on other branches at the time of writing: these lines are to
# use the constants once those land. The list may only shrink.
PENDING = {
    ("kagent/controller/render.py", "app.kubernetes.io/name"),
    ("kagent/controller/render.py", "app.kubernetes.io/instance"),
    ("kagent/workflow/engine.py", "app.kubernetes.io/managed-by"),
    ("kagent/workflow/engine.py", "kagent.dev/workflowrun"),
}


def literals() -> set[tuple[str, str]]:
    """(file, value) for every string constant in the package equal to a well-known name."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = str(path.relative_to(REPO))
        if relative == "kagent/api/labels.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                found.add((relative, node.value))
    return found


def test_every_well_known_name_is_spelled_only_in_labels() -> None:
    stray = literals() - OTHER_MEANINGS - PENDING
    assert not stray, "use the constants of kagent.api.labels instead of: " + ", ".join(
        f"{value!r} in {file}" for file, value in sorted(stray))


def test_the_pending_list_only_names_what_is_still_there() -> None:
    assert PENDING <= literals(), f"done, remove from PENDING: {PENDING - literals()}"


def test_the_chart_names_its_webhook_configurations_as_the_controller_expects() -> None:
    text = (REPO / "charts/kagent/templates/webhooks.yaml").read_text()
    names = re.findall(r"^kind: (\w+WebhookConfiguration)\nmetadata:\n  name: (\S+)$", text,
                       re.MULTILINE)
    assert names == [("ValidatingWebhookConfiguration", labels.WEBHOOK_CONFIGURATION_NAME),
                     ("MutatingWebhookConfiguration", labels.WEBHOOK_CONFIGURATION_NAME)]


def test_the_labels_are_valid_kubernetes_keys() -> None:
    prefixed = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*"
                          r"[A-Za-z0-9])?$")
    for name in ("AGENT_LABEL", "WORKFLOW_LABEL", "WORKFLOW_RUN_LABEL", "MANAGED_BY_LABEL",
                 "CONFIG_HASH_ANNOTATION", "LOCAL_READY_ANNOTATION", "TEST_NAMESPACE_LABEL",
                 "FINALIZER"):
        value = getattr(labels, name)
        assert prefixed.match(value) and len(value.split("/")[-1]) <= 63, name
