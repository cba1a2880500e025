"""What `kagent rollout status` prints of the usage figures, the evaluation and the router."""

from __future__ import annotations

from kagent.cli.rollout import status_lines


def test_status_shows_usage_evaluation_and_the_router() -> None:
    agent = {"spec": {"rollout": {"strategy": "Canary"}}, "status": {"rollout": {
        "strategy": "Canary", "phase": "RolledBack", "stableRevision": 1, "stableHash": "a",
        "canaryRevision": 2, "canaryHash": "b", "stableWeight": 70, "canaryWeight": 30,
        "stableReplicas": 2, "canaryReplicas": 1, "trafficRouter": "HTTPRoute",
        "analysis": {"verdict": "Failed", "message": "evaluation 0/2 prompts passed",
                     "canary": {"requests": 4, "tokensPerRequest": "2.01e+04",
                                "costPerRequest": "0.01202",
                                "evaluation": {"cases": 2, "passed": 0, "score": "0.1",
                                               "failures": ["prompt 0: is not JSON"]}},
                     "stable": {"requests": 5, "tokensPerRequest": "30"}}}}}
    text = "\n".join(status_lines(agent))
    assert "weights:  stable 70% (2 pods), new 30% (1 pods) on the HTTPRoute" in text
    assert "tokens/request 2.01e+04, cost/request $0.01202" in text
    assert "evaluation 0/2 passed, judge score 0.1" in text and "prompt 0: is not JSON" in text
    assert "tokens/request 30, cost/request $-" in text
