"""Another attempt of a finished run (``spec.retry``): which steps run again, what the run's
status becomes when the retry is taken up, and which retry requests admission refuses. Pure, so
the webhook, the engine and the CLI agree, and the unit tests pin the choice down.

A retry keeps every step that succeeded (and its output, also one kept in the outputs
ConfigMap) unless the retry names it in ``fromStep`` or it depends on a step that runs again:
those run again from Pending. A step's ``attempts`` keep counting across retries, so its next
attempt has a new ``taskId`` (the A2A message id an agent answers once): a step run again gets
a fresh model call, while a re-send within one attempt (a new controller leader) still gets the
first answer.
"""

from __future__ import annotations

from kagent.api.workflow import (
    RUN_ATTEMPT_HISTORY,
    RunAttempt,
    RunRetryRequest,
    StepStatus,
    WorkflowRunStatus,
)
from kagent.workflow.plan import PlanError, WorkflowPlan
from kagent.workflow.state import merge_steps

RETRYABLE_RUN_PHASES = frozenset({"Failed"})
"""Only a Failed run (a cancelled one is Failed with reason Cancelled) can be retried."""
RETRYING = "Retrying"
"""The reason a retried run is Pending with until it is admitted again."""


class RetryProblem(PlanError):
    """A retry request that cannot be acted on, naming the field at fault."""


def current_attempt(status: WorkflowRunStatus | None) -> int:
    """The attempt a run is on (1 until a retry was taken up)."""
    return (status.attempt if status is not None else None) or 1


def wants_retry(retry: RunRetryRequest | None, status: WorkflowRunStatus | None) -> bool:
    """Whether ``spec.retry`` asks for an attempt the run has not reached: a request is taken up
    once, whichever controller leader sees it and however often."""
    return retry is not None and retry.attempt > current_attempt(status)


def downstream(deps: dict[str, list[str]], seeds: set[str]) -> set[str]:
    """``seeds`` and every step that depends on one of them, directly or through others."""
    dependents: dict[str, list[str]] = {}
    for step, needs in deps.items():
        for need in needs:
            dependents.setdefault(need, []).append(step)
    found = set(seeds)
    todo = list(seeds)
    while todo:
        for after in dependents.get(todo.pop(), []):
            if after not in found:
                found.add(after)
                todo.append(after)
    return found


def _unfinished(step: StepStatus) -> bool:
    """A step the last attempt did not finish well: failed, or not run because of a failure
    (a step skipped because its ``when`` was false is a finished decision, kept)."""
    if step.phase == "Succeeded":
        return False
    if step.phase == "Skipped":
        return step.error is not None  # DEPENDENCY_FAILED or "not run: the run ended"
    return True


def steps_to_rerun(plan: WorkflowPlan, steps: list[StepStatus], from_step: str | None) -> list[str]:
    """The steps a retry runs again, in the Workflow's order: the failed and unfinished ones,
    ``from_step`` if given, and everything downstream of them. Raises RetryProblem naming
    ``spec.retry.fromStep`` when the Workflow has no such step."""
    names = [s.name for s in plan.spec.steps]
    if from_step is not None and from_step not in plan.steps:
        raise RetryProblem("spec.retry.fromStep", f"Workflow has no step {from_step!r} (its steps: "
                           f"{', '.join(names)})")
    seeds = {s.name for s in merge_steps(plan.spec, steps) if _unfinished(s)}
    if from_step is not None:
        seeds.add(from_step)
    again = downstream(plan.deps, seeds)
    return [n for n in names if n in again]


def reset_step(step: StepStatus) -> StepStatus:
    """A step back to Pending for a retry. Its attempts (so its next taskId is new), usage (the
    earlier attempts were paid for), start time and agent stay."""
    return step.model_copy(update={"phase": "Pending", "error": None, "finished_at": None,
                                   "output": None, "output_ref": None, "iterations": None})


def retry_status(status: WorkflowRunStatus, plan: WorkflowPlan, retry: RunRetryRequest,
                 now: str) -> WorkflowRunStatus:
    """The status that takes up ``retry``: the run Pending again (admitted like a new run, under
    its Workflow's concurrency), the steps to run again reset, the attempt recorded. Written in
    one status write, so the request is taken up exactly once. Raises RetryProblem when the
    retry cannot be taken up."""
    if status.phase not in RETRYABLE_RUN_PHASES:
        raise RetryProblem("spec.retry", f"the run is {status.phase or 'Pending'}; only a Failed "
                           "(or cancelled) run can be retried")
    steps = merge_steps(plan.spec, status.steps)
    rerun = steps_to_rerun(plan, steps, retry.from_step)
    again = set(rerun)
    record = RunAttempt(attempt=retry.attempt, started_at=now, from_step=retry.from_step,
                        steps=rerun, previous_reason=status.reason)
    new = status.model_copy()
    new.phase, new.reason = "Pending", RETRYING
    new.message = (f"attempt {retry.attempt}: running again "
                   + (", ".join(rerun) if rerun else "no step (the run's output is made again)"))
    new.finished_at = None
    new.output = None
    new.steps = [reset_step(s) if s.name in again else s for s in steps]
    new.attempt = retry.attempt
    new.attempts = ([*(status.attempts or []), record])[-RUN_ATTEMPT_HISTORY:]
    return new


def attempt_started(status: WorkflowRunStatus | None) -> str | None:
    """When the run's current attempt began, if it is a retry (its deadline counts from there)."""
    if status is None or not status.attempts:
        return None
    return status.attempts[-1].started_at


def retry_request_problems(new: RunRetryRequest | None, old: RunRetryRequest | None,
                           old_status: WorkflowRunStatus | None, cancel: bool) -> list[RetryProblem]:
    """Why admission refuses a change of ``spec.retry`` (none when it is unchanged or removed):
    only a Failed run, only a new attempt number, and a cancelled run must be un-cancelled in
    the same change. Whether ``fromStep`` names a step needs the Workflow: see
    :func:`unknown_step_problem`."""
    if new is None or new == old:
        return []
    if old_status is None or old_status.phase is None:
        return [RetryProblem("spec.retry", "the run has not run yet; there is nothing to retry")]
    problems: list[RetryProblem] = []
    if old_status.phase not in RETRYABLE_RUN_PHASES:
        problems.append(RetryProblem("spec.retry", f"the run is {old_status.phase}; only a Failed "
                                     "(or cancelled) run can be retried"))
    elif new.attempt <= current_attempt(old_status) or (old is not None and new.attempt <= old.attempt):
        floor = max(current_attempt(old_status), old.attempt if old is not None else 0)
        problems.append(RetryProblem("spec.retry.attempt", f"must be above {floor}, the attempt "
                                     f"already asked for (use {floor + 1})"))
    if cancel:
        problems.append(RetryProblem("spec.cancel", "set cancel to false with spec.retry to retry "
                                     "a cancelled run"))
    return problems


def unknown_step_problem(new: RunRetryRequest | None, steps: list[str]) -> RetryProblem | None:
    """``spec.retry.fromStep`` naming no step of the run's Workflow."""
    if new is None or new.from_step is None or new.from_step in steps:
        return None
    return RetryProblem("spec.retry.fromStep", f"Workflow has no step {new.from_step!r} (its "
                        f"steps: {', '.join(steps)})")

