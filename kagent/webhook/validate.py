"""What admission checks beyond the CRD schema and its CEL rules. Pure: the webhook handler
feeds objects in and turns the findings into a verdict.

Refusals name the field. References to objects that do not exist yet are only warnings: GitOps
tools apply everything at once, in any order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from kagent.api import Agent, Memory, Resource, Tool, Workflow, WorkflowRun
from kagent.api.labels import WORKFLOW_LABEL
from kagent.api.manifests import ManifestError, parse_resource
from kagent.api.parameters import parameters_json_schema
from kagent.api.pricing import price_for
from kagent.api.rollout import RolloutSpec, rollout_problems
from kagent.api.secrets import secret_refs_with_fields
from kagent.workflow.expressions import STEP_FIELDS, ExpressionError, compile_condition
from kagent.workflow.expressions import references as expression_references
from kagent.workflow.plan import PlanError, plan
from kagent.workflow.retry import retry_request_problems, unknown_step_problem
from kagent.workflow.schedule import ScheduleError, parse_cron, parse_time_zone
from kagent.workflow.state import missing_inputs, missing_inputs_message


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Reference:
    """An object this one refers to, and where."""

    kind: str
    name: str
    field: str


def _json_schema_errors(schema: dict[str, Any] | None, field: str) -> list[FieldError]:
    if schema is None:
        return []
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        return [FieldError(field, f"not a valid JSON Schema: {error.message}")]
    return []


def _check_agent(agent: Agent) -> list[FieldError]:
    errors: list[FieldError] = []
    model = agent.spec.model
    chain = [("spec.model", model)]
    chain += [(f"spec.model.fallbacks[{i}]", f) for i, f in enumerate(model.fallbacks or [])]
    for field, endpoint in chain:
        if endpoint.endpoint and not endpoint.endpoint.startswith(("http://", "https://")):
            errors.append(FieldError(f"{field}.endpoint", "must be an http:// or https:// URL"))
    scaling = agent.spec.scaling
    if scaling is not None and scaling.keda is not None and not scaling.keda.enabled and scaling.keda.triggers:
        errors.append(FieldError("spec.scaling.keda.triggers", "triggers are only used when keda.enabled is true"))
    if scaling is not None and scaling.keda is not None and scaling.keda.enabled:
        for i, trigger in enumerate(scaling.keda.triggers or []):
            if trigger.type == "prometheus":
                meta = trigger.metadata
                if "threshold" not in meta:
                    errors.append(FieldError(f"spec.scaling.keda.triggers[{i}].metadata.threshold",
                                             "a prometheus trigger needs a threshold"))
                if "query" not in meta and "metricName" not in meta:
                    errors.append(FieldError(f"spec.scaling.keda.triggers[{i}].metadata",
                                             "a prometheus trigger needs a query or a metricName"))
    if agent.spec.rollout is not None:
        model = agent.spec.model
        unpriced = None if price_for(model.provider, model.name, model.pricing) is not None \
            else f"{model.provider}/{model.name}"
        errors += [FieldError(field, message) for field, message in
                   rollout_problems(agent.spec.rollout, autoscaled=agent.spec.scaling is not None,
                                    unpriced_model=unpriced)]
        errors += _evaluation_errors(agent.spec.rollout)
        name = str(agent.metadata.name or "")
        if agent.spec.rollout.strategy == "BlueGreen" and len(name) > 55:
            errors.append(FieldError("metadata.name", "BlueGreen adds a preview Service named "
                                     f"{name}-preview: the name may have at most 55 characters"))
        canary = agent.spec.rollout.canary
        if agent.spec.rollout.strategy == "Canary" and canary is not None \
                and canary.gateway is not None and len(name) > 56:
            errors.append(FieldError("metadata.name", "a Canary with a gateway adds Services named "
                                     f"{name}-stable and {name}-canary: the name may have at most "
                                     "56 characters"))
    return errors


def _evaluation_errors(rollout: RolloutSpec) -> list[FieldError]:
    """The evaluation dataset's JSON Schemas and CEL checks, compiled now rather than failing
    a rollout later (CEL with the Workflow conditions' cost bounds)."""
    errors: list[FieldError] = []
    for where, settings in (("spec.rollout.canary.analysis", rollout.canary),
                            ("spec.rollout.blueGreen.analysis", rollout.blue_green)):
        evaluation = settings.analysis.evaluation if settings and settings.analysis else None
        for i, case in enumerate(evaluation.dataset if evaluation else []):
            checks = case.checks
            field = f"{where}.evaluation.dataset[{i}].checks"
            if checks is None:
                continue
            errors += _json_schema_errors(checks.json_schema, f"{field}.jsonSchema")
            if checks.cel is not None:
                try:
                    compile_condition(checks.cel)
                except ExpressionError as error:
                    errors.append(FieldError(f"{field}.cel", str(error)))
    return errors


def _check_tool(tool: Tool) -> list[FieldError]:
    errors = _json_schema_errors(tool.spec.input_schema, "spec.inputSchema")
    errors += _json_schema_errors(tool.spec.output, "spec.output")
    if tool.spec.parameters:
        errors += _json_schema_errors(parameters_json_schema(tool.spec.parameters), "spec.parameters")
        for i, param in enumerate(tool.spec.parameters):
            if param.enum and param.type in ("integer", "number"):
                for j, value in enumerate(param.enum):
                    try:
                        float(value) if param.type == "number" else int(value)
                    except ValueError:
                        errors.append(FieldError(f"spec.parameters[{i}].enum[{j}]",
                                                 f"{value!r} is not a {param.type}"))
    return errors


def _workflow_expressions(workflow: Workflow) -> list[tuple[str, str, bool]]:
    """Every condition and template of a Workflow: (field, text, is a condition)."""
    found: list[tuple[str, str, bool]] = []
    for i, step in enumerate(workflow.spec.steps):
        where = f"spec.steps[{i}]"
        if step.input:
            found.append((f"{where}.input", step.input, False))
        if step.when:
            found.append((f"{where}.when", step.when, True))
        if step.loop:
            found.append((f"{where}.loop.until", step.loop.until, True))
        if step.route and step.route.cases:
            found += [(f"{where}.route.cases[{j}].when", c.when, True)
                      for j, c in enumerate(step.route.cases)]
    found += [(f"spec.output.{key}", text, False) for key, text in (workflow.spec.output or {}).items()]
    return found


def _expression_errors(workflow: Workflow) -> list[FieldError]:
    """Conditions and templates that do not parse or are over their bounds, and every
    ``steps.<name>`` / ``input.<name>`` they read that the Workflow does not have: found here,
    not mid-run after earlier steps have paid for their model calls."""
    spec = workflow.spec
    steps = {s.name for s in spec.steps}
    declared = None if spec.input is None else {p.name for p in spec.input}
    errors: list[FieldError] = []
    for field, text, is_condition in _workflow_expressions(workflow):
        try:
            refs = expression_references(text, condition=is_condition)
        except ExpressionError as error:
            errors.append(FieldError(field, str(error)))
            continue
        problems: list[str] = []
        for ref in sorted(refs, key=str):
            if ref.root == "steps" and ref.name not in steps:
                problems.append(f"no step named {ref.name!r} (steps.{ref.name})")
            elif ref.root == "steps" and ref.field is not None and ref.field not in STEP_FIELDS:
                problems.append(f"{ref}: a step has no field {ref.field!r} (it has "
                                f"{', '.join(STEP_FIELDS)})")
            elif ref.root == "input" and declared is not None and ref.name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                problems.append(f"no input named {ref.name!r} ({ref}; the inputs are: {known})")
        errors += [FieldError(field, p) for p in dict.fromkeys(problems)]
    return errors


def _check_workflow(workflow: Workflow) -> list[FieldError]:
    spec = workflow.spec
    errors: list[FieldError] = []
    deps: dict[str, list[str]] | None = None
    try:
        deps = plan(spec)
    except PlanError as error:
        errors.append(FieldError(error.field, error.message))
    for i, step in enumerate(spec.steps):
        where = f"spec.steps[{i}]"
        if step.agent is None and step.route is None:
            errors.append(FieldError(where, "give one of agent or route"))
        if step.route and step.route.choices and len(set(step.route.choices)) != len(step.route.choices):
            errors.append(FieldError(f"{where}.route.choices", "choices must not repeat"))
        if deps is not None and step.input is None and not spec.input and not deps.get(step.name):
            errors.append(FieldError(f"{where}.input", (
                "the step has nothing to send: it depends on no step and the workflow declares "
                "no inputs; give the step an input (e.g. input: \"Summarize the news\") or "
                "declare spec.input")))
    return errors + _expression_errors(workflow) + _schedule_errors(workflow)


MAX_SCHEDULE_INPUT_BYTES = 65_536
"""A schedule's input is copied into every run it starts: kept small."""


def _schedule_errors(workflow: Workflow) -> list[FieldError]:
    """Each schedule's cron expression and time zone can be read, and its input is what the
    workflow's input parameters accept: known names, the declared types and enums, every
    required input given (or defaulted)."""
    spec = workflow.spec
    errors: list[FieldError] = []
    seen: set[str] = set()
    declared = {p.name: p for p in spec.input or []}
    checker = validator_for({})(parameters_json_schema(list(declared.values())))
    for i, schedule in enumerate(spec.schedules or []):
        where = f"spec.schedules[{i}]"
        if schedule.name in seen:
            errors.append(FieldError(f"{where}.name", f"another schedule is named {schedule.name!r}"))
        seen.add(schedule.name)
        for check, value in ((parse_cron, schedule.cron), (parse_time_zone, schedule.time_zone)):
            try:
                check(value)
            except ScheduleError as error:
                errors.append(FieldError(f"{where}.{error.field}", error.message))
        given = schedule.input or {}
        if len(json.dumps(given)) > MAX_SCHEDULE_INPUT_BYTES:
            errors.append(FieldError(f"{where}.input", f"is larger than {MAX_SCHEDULE_INPUT_BYTES} bytes"))
            continue
        if not declared:
            continue  # a workflow without declared inputs takes its run's input as it is
        for name in given:
            if name not in declared:
                known = ", ".join(sorted(declared))
                errors.append(FieldError(f"{where}.input.{name}",
                                         f"the workflow has no input named {name!r} (its inputs are: {known})"))
        problems = checker.iter_errors({k: v for k, v in given.items() if k in declared})
        for problem in (p for p in problems if p.validator != "required"):  # missing: below
            path = ".".join(str(p) for p in problem.absolute_path)
            errors.append(FieldError(f"{where}.input" + (f".{path}" if path else ""), problem.message))
        missing = missing_inputs(spec, given)
        if missing:
            errors.append(FieldError(f"{where}.input.{missing[0]}", (
                f"the workflow requires input {', '.join(missing)}; give it in the schedule's "
                "input (or give the input a default)")))
    return errors


def run_input_errors(run: dict[str, Any], workflow: dict[str, Any]) -> list[FieldError]:
    """A new run that does not give a required input of its Workflow (one without a default):
    refused when it is created, naming the input, rather than failed later."""
    try:
        spec = Workflow.model_validate(workflow).spec
        given = WorkflowRun.model_validate(run).spec.input
    except ValueError:
        return []  # an invalid Workflow is reported on the Workflow; the run fails at admission
    missing = missing_inputs(spec, given)
    name = (workflow.get("metadata") or {}).get("name", "")
    return [FieldError(f"spec.input.{missing[0]}", missing_inputs_message(name, missing))] if missing else []


def _check_run(run: WorkflowRun, old: WorkflowRun | None) -> list[FieldError]:
    if old is None:
        if run.spec.retry is not None:
            return [FieldError("spec.retry", "a new run has nothing to retry; leave retry unset "
                               "(to run the same input again, create a new run)")]
        return []
    errors = []
    if run.spec.workflow_ref != old.spec.workflow_ref:
        errors.append(FieldError("spec.workflowRef", "is immutable"))
    if run.spec.input != old.spec.input:
        errors.append(FieldError("spec.input", "is immutable; create a new WorkflowRun instead"))
    retrying = run.spec.retry is not None and run.spec.retry != old.spec.retry
    if old.spec.cancel and not run.spec.cancel and not retrying:
        errors.append(FieldError("spec.cancel", "a cancelled run cannot be resumed; retry it "
                                 "instead (spec.retry, or kagent workflow retry)"))
    errors += [FieldError(p.field, p.message) for p in retry_request_problems(
        run.spec.retry, old.spec.retry, old.status, run.spec.cancel)]
    return errors


def retry_step_errors(run: dict[str, Any], old: dict[str, Any] | None,
                      workflow: dict[str, Any]) -> list[FieldError]:
    """A retry whose fromStep names no step of the run's Workflow."""
    try:
        retry = WorkflowRun.model_validate(run).spec.retry
        previous = WorkflowRun.model_validate(old).spec.retry if old else None
        steps = [s.name for s in Workflow.model_validate(workflow).spec.steps]
    except ValueError:
        return []  # an invalid Workflow is reported on the Workflow; the engine refuses the retry
    if retry == previous:
        return []
    problem = unknown_step_problem(retry, steps)
    return [FieldError(problem.field, problem.message)] if problem else []


def validate(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[FieldError]:
    """Every problem with an object being created or updated, each naming its field."""
    try:
        resource = parse_resource(obj, source="object")
    except ManifestError as error:
        lines = str(error).splitlines()[1:] or [str(error)]
        return [FieldError(*line.strip().split(": ", 1)) if ": " in line else FieldError("object", line)
                for line in lines]
    if isinstance(resource, Agent):
        return _check_agent(resource)
    if isinstance(resource, Tool):
        return _check_tool(resource)
    if isinstance(resource, Workflow):
        return _check_workflow(resource)
    if isinstance(resource, WorkflowRun):
        previous = parse_resource(old) if old else None
        return _check_run(resource, previous if isinstance(previous, WorkflowRun) else None)
    return []


def advice(obj: dict[str, Any]) -> list[str]:
    """Things that will not work as the user likely expects but are not wrong enough to refuse
    (the brief's own Agent asks for Langfuse tracing without naming the keys): warnings."""
    try:
        resource = parse_resource(obj, source="object")
    except ManifestError:
        return []
    found: list[str] = []
    if isinstance(resource, Agent) and resource.spec.observability is not None:
        tracing = resource.spec.observability.tracing
        if tracing is not None and tracing.enabled and tracing.provider in ("langfuse", "langsmith") \
                and tracing.secret_ref is None:
            keys = "public-key and secret-key" if tracing.provider == "langfuse" else "api-key"
            found.append(f"spec.observability.tracing.secretRef: {tracing.provider} needs a Secret "
                         f"with {keys}; until it is set the agent runs without sending traces")
    if isinstance(resource, Agent):
        found.extend(_in_memory_replicas_advice(resource))
    if isinstance(resource, Agent) and resource.spec.auth is not None \
            and resource.spec.auth.mode == "none":
        found.append("spec.auth.mode: none lets anyone who can reach the agent call it, with no "
                     "token and no RBAC check; remove it to require authenticated callers")
    if isinstance(resource, Tool) and resource.spec.code is not None \
            and resource.spec.code.isolation == "best-effort":
        found.append("spec.code.isolation: best-effort runs model-written code even where the "
                     "agent pod cannot give it every isolation layer (namespaces, Landlock, "
                     "seccomp): it may then reach the agent's process, files or network. Keep "
                     "strict unless you accept that")
    return found


def _in_memory_replicas_advice(agent: Agent) -> list[str]:
    """In-memory conversations live in one pod: with several pods a conversation continued on
    another one starts from nothing, and every restart loses them."""
    spec = agent.spec
    if spec.memory_ref is not None or (spec.memory is not None and spec.memory.type != "in-memory"):
        return []
    most = spec.scaling.max_replicas if spec.scaling is not None else spec.replicas or 1
    if most <= 1:
        return []
    field = "spec.scaling.maxReplicas" if spec.scaling is not None else "spec.replicas"
    memory = "spec.memory.type in-memory" if spec.memory is not None else "no memory (in-memory)"
    return [f"{field}: {most} pods with {memory} keep each conversation in one pod only: a "
            "request served by another pod does not see it, and a restart loses it; use redis "
            "or postgres memory to run more than one pod"]


def references(resource: Resource) -> list[Reference]:
    """Objects the resource names, to look up for admission warnings."""
    refs: list[Reference] = []
    if isinstance(resource, Agent):
        refs += [Reference(t.kind, t.name, f"spec.tools[{i}]") for i, t in enumerate(resource.spec.tools or [])]
        if resource.spec.memory_ref:
            refs.append(Reference("Memory", resource.spec.memory_ref.name, "spec.memoryRef"))
    elif isinstance(resource, Tool) and resource.spec.agent:
        refs.append(Reference("Agent", resource.spec.agent.name, "spec.agent.name"))
    elif isinstance(resource, Workflow):
        for i, step in enumerate(resource.spec.steps):
            if step.agent:
                refs.append(Reference("Agent", step.agent, f"spec.steps[{i}].agent"))
            if step.route:
                names = [c.agent for c in step.route.cases or []] + list(step.route.choices or [])
                names += [n for n in (step.route.default, step.route.router) if n]
                refs += [Reference("Agent", n, f"spec.steps[{i}].route") for n in dict.fromkeys(names)]
    elif isinstance(resource, WorkflowRun):
        refs.append(Reference("Workflow", resource.spec.workflow_ref.name, "spec.workflowRef.name"))
    elif isinstance(resource, Memory):
        pass
    return refs


def new_secret_references(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Reference]:
    """Secrets the object references that its previous version did not (by field and name):
    the requester must be allowed to read each of them. An unchanged reference was checked when
    it was written, so editing another field does not need the right again."""
    try:
        resource = parse_resource(obj, source="object")
    except ManifestError:
        return []
    before: set[tuple[str, str]] = set()
    if old:
        try:
            before = {(f, r.name) for f, r in secret_refs_with_fields(parse_resource(old).spec, "spec")}
        except ManifestError:
            before = set()
    spec = getattr(resource, "spec", None)
    if spec is None:
        return []
    found = [(field, ref.name) for field, ref in secret_refs_with_fields(spec, "spec")]
    return [Reference("Secret", name, field) for field, name in found if (field, name) not in before]


def defaults(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch operations the mutating webhook adds (the schema already fills plain
    defaults; these need the object's other fields)."""
    ops: list[dict[str, Any]] = []
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    if kind == "Agent" and not (obj.get("spec") or {}).get("displayName") and meta.get("name"):
        ops.append({"op": "add", "path": "/spec/displayName", "value": meta["name"]})
    if kind == "WorkflowRun":
        workflow = ((obj.get("spec") or {}).get("workflowRef") or {}).get("name")
        labels = meta.get("labels") or {}
        if workflow and labels.get(WORKFLOW_LABEL) != workflow:
            if "labels" not in meta:
                ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
            escaped = WORKFLOW_LABEL.replace("~", "~0").replace("/", "~1")  # JSON pointer
            ops.append({"op": "add", "path": f"/metadata/labels/{escaped}", "value": workflow})
    return ops
