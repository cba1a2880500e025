"""Runs a rollout's evaluation dataset (I/O): each prompt is sent to one pod of each revision
directly (not through the Agent's Service, which would mix the revisions), as the controller
calls agents (the shared agent client, with the controller's own credentials); CEL checks run
in the bounded expression worker of the workflow engine; a judge Agent is reached like a
workflow step reaches its agent.

An evaluation runs in the background, once per pair of revisions: the reconcile that asks for
it starts it, and a later reconcile reads its result (the planner waits meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lightkube import AsyncClient

from kagent.agentclient import AgentCallError, default_agent_client
from kagent.api.base import parse_duration
from kagent.api.rollout import EvaluationCase, EvaluationResult, EvaluationSpec
from kagent.controller.rollout.evaluation import (
    MAX_ANSWER_CHARS,
    CaseOutcome,
    answer_json,
    check_problems,
    judge_message,
    parse_score,
    summarise,
)
from kagent.controller.rollout.plan import Evaluation
from kagent.workflow.expressions import ExpressionError, Expressions, WorkerExpressions
from kagent.workflow.resolver import AgentNotReady, ClusterAgentResolver

log = logging.getLogger("kagent.controller.rollout")

MAX_RUNNING = 64
"""Evaluations kept (running or done) across all Agents; the oldest done ones go first."""
EvaluationKey = tuple[str, str, str, str | None]
"""(namespace, agent, new revision's hash, stable revision's hash)."""
PodUrls = Callable[[], Awaitable[dict[str, str]]]
"""Config hash → base URL of one running pod of that revision."""


@dataclass
class _Entry:
    task: asyncio.Task[Evaluation]


@dataclass
class EvaluationRunner:
    client: AsyncClient
    expressions: Expressions | None = None
    _entries: dict[EvaluationKey, _Entry] = field(default_factory=dict)

    def result(self, key: EvaluationKey, spec: EvaluationSpec, agent: str,
               pod_urls: PodUrls) -> Evaluation | None:
        """The evaluation of this pair of revisions: its result once done, else None (started
        now if it was not running)."""
        entry = self._entries.get(key)
        if entry is None:
            for stale in [k for k in self._entries if k[:2] == key[:2]]:
                self._drop(stale)
            if len(self._entries) >= MAX_RUNNING:
                self._drop(next(iter(self._entries)))
            task = asyncio.create_task(self._run(key, spec, agent, pod_urls),
                                       name=f"evaluation-{key[0]}-{key[1]}")
            self._entries[key] = entry = _Entry(task)
        if not entry.task.done():
            return None
        if entry.task.cancelled() or entry.task.exception() is not None:
            # not the revision's fault (the API server, a bug): try again at the next look
            log.warning("evaluation of %s/%s failed: %r", key[0], key[1],
                        None if entry.task.cancelled() else entry.task.exception())
            self._entries.pop(key, None)
            return None
        return entry.task.result()

    def _drop(self, key: EvaluationKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and not entry.task.done():
            entry.task.cancel()

    async def _run(self, key: EvaluationKey, spec: EvaluationSpec, agent: str,
                   pod_urls: PodUrls) -> Evaluation:
        namespace, _, canary_hash, stable_hash = key
        try:
            urls = await pod_urls()
            judge_url = None
            if spec.judge is not None:
                resolver = ClusterAgentResolver.from_environment(self.client)
                judge_url = await resolver.resolve(namespace, spec.judge.agent)
            canary, stable = await asyncio.gather(
                self._revision(spec, agent, urls.get(canary_hash), judge_url),
                self._revision(spec, agent, urls.get(stable_hash or ""), judge_url))
            log.info("evaluation of %s/%s: new revision %d/%d, stable %d/%d", namespace, agent,
                     canary.passed, canary.cases, stable.passed, stable.cases)
            return Evaluation(canary, stable)
        except (AgentNotReady, AgentCallError, OSError) as error:
            failed = EvaluationResult(cases=len(spec.dataset), passed=0,
                                      failures=[f"the evaluation could not run: {error}"[:200]])
            return Evaluation(failed, None)

    async def _revision(self, spec: EvaluationSpec, agent: str, url: str | None,
                        judge_url: str | None) -> EvaluationResult:
        if url is None:
            return EvaluationResult(cases=len(spec.dataset), passed=0,
                                    failures=["no running pod of this revision answered"])
        outcomes = [await self._case(spec, case, agent, url, judge_url) for case in spec.dataset]
        return summarise(spec, outcomes)

    async def _case(self, spec: EvaluationSpec, case: EvaluationCase, agent: str, url: str,
                    judge_url: str | None) -> CaseOutcome:
        timeout = parse_duration(spec.answer_timeout).total_seconds()
        client = default_agent_client()
        try:
            answer = (await client.ask(url, agent, case.prompt, timeout=timeout,
                                       message_id=str(uuid.uuid4()))).text[:MAX_ANSWER_CHARS]
        except (AgentCallError, TimeoutError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return CaseOutcome((f"no answer: {reason}",), 0.0 if spec.judge else None)
        cel_passed = None
        if case.checks is not None and case.checks.cel is not None:
            expressions = self.expressions = self.expressions or WorkerExpressions()
            try:
                cel_passed = await expressions.condition(
                    case.checks.cel, {"answer": answer, "json": answer_json(answer)})
            except ExpressionError as error:
                log.info("evaluation CEL check failed: %s", error)
                cel_passed = False
        problems = tuple(check_problems(case, answer, cel_passed))
        score = None
        if spec.judge is not None and judge_url is not None:
            try:
                verdict = await client.ask(judge_url, spec.judge.agent, judge_message(case, answer),
                                           timeout=timeout, message_id=str(uuid.uuid4()))
                score = parse_score(verdict.text)
            except (AgentCallError, TimeoutError) as error:
                problems += (f"the judge did not answer: {error}",)
            if score is None and not problems:
                problems += ("the judge's reply had no score",)
        return CaseOutcome(problems, score)

    def close(self) -> None:
        for key in list(self._entries):
            self._drop(key)
        close = getattr(self.expressions, "close", None)
        if close is not None:
            close()
