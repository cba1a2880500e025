"""The generated CRDs are structural, described, and in step with the types."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kagent.api import KINDS
from kagent.api.crd import all_crds, default_crd_dir, render_yaml


def test_committed_crds_match_the_types() -> None:
    directory = default_crd_dir()
    expected = all_crds()
    on_disk = {p.name for p in directory.glob("*.yaml")}
    assert on_disk == set(expected), "run `make crds`: the chart's CRD files differ from the types"
    for filename, manifest in expected.items():
        assert (directory / filename).read_text() == render_yaml(manifest), (
            f"{filename} is stale: run `make crds`"
        )


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind_name)
def test_schema_is_structural_and_described(kind: type) -> None:
    crd = all_crds()[f"kagent.dev_{kind.plural}.yaml"]
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema, kind.kind_name):
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
            assert banned not in node, f"{path} has {banned}"
        named_field = path.count(".") >= 1 and not path.endswith(("]", "}", ".metadata"))
        if named_field:
            assert node.get("description"), f"{path} has no description"
        if "properties" in node:
            assert node["type"] == "object", path
            assert "additionalProperties" not in node, path
        if not node.get("x-kubernetes-preserve-unknown-fields") and not node.get(
            "x-kubernetes-int-or-string"
        ):
            assert "type" in node, f"{path} has no type"
        if "default" in node:
            assert not isinstance(node["default"], (dict, list)), path


def test_crd_names_and_columns() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in all_crds().values()}
    assert set(crds) == {"Agent", "Tool", "Memory", "Workflow", "WorkflowRun", "Budget"}
    for kind, crd in crds.items():
        assert crd["spec"]["names"]["categories"] == ["kagent"]
        assert crd["spec"]["names"]["shortNames"]
        scale = {"scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                           "labelSelectorPath": ".status.selector"}} if kind == "Agent" else {}
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}, **scale}, kind
    agent_columns = [c["name"] for c in crds["Agent"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert agent_columns[:4] == ["Provider", "Model", "Ready", "Replicas"]
    assert "Age" in agent_columns
    run_columns = [c["name"] for c in crds["WorkflowRun"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Workflow", "Phase", "Started", "Duration"} <= set(run_columns)


def test_step_and_parameter_lists_are_maps() -> None:
    workflow = all_crds()["kagent.dev_workflows.yaml"]["spec"]["versions"][0]["schema"]
    spec = workflow["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in ("steps", "input"):
        assert spec[field]["x-kubernetes-list-type"] == "map"
        assert spec[field]["x-kubernetes-list-map-keys"] == ["name"]
    assert spec["steps"]["minItems"] == 1


def test_rendered_yaml_parses_back() -> None:
    for manifest in all_crds().values():
        assert yaml.safe_load(render_yaml(manifest)) == manifest


def test_kagent_crds_writes_one_file_per_kind(tmp_path: Any) -> None:
    """`kagent crds --output DIR`, as a user runs it, writes exactly the committed files."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "kagent", "crds", "--output", str(tmp_path)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert written == sorted(all_crds()) and len(written) == len(KINDS)
    for name in written:
        assert (tmp_path / name).read_text() == (default_crd_dir() / name).read_text()
