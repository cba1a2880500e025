"""What authenticating every request costs: the same agent served twice by `kagent runtime`,
once checking callers against a real API server (TokenReview + SubjectAccessReview, decisions
cached) and once answering local callers without credentials (the baseline), driven by the
official openai client with the same scripted model.

Reported: p50/p99 latency of a request whose decision is cached, as a ratio to the baseline;
the latency of the first request of a token (two reviews at the API server); and requests with
a wrong token (refused from the negative cache). Target: a cached request costs at most 1.2x
the baseline's p50.
"""

from __future__ import annotations

import time
from typing import Any

from openai import AuthenticationError, OpenAI

from benchmarks.common import percentile, write_result
from kagent.local.controlplane import ControlPlane, install_crds
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess

SCRIPT = {"default": {"content": "ok", "usage": {"input_tokens": 5, "output_tokens": 1}}}
REQUESTS = 200
NAMESPACE = "bench"
TARGET_RATIO = 1.2


def documents(model_url: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": "bench", "namespace": NAMESPACE},
             "spec": {"model": {"provider": "vllm", "name": "m", "endpoint": f"{model_url}/v1"}}}]


def timed(client: OpenAI, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        client.chat.completions.create(model="bench", messages=[{"role": "user", "content": "hi"}])
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    with ControlPlane() as plane, MockLLM(SCRIPT) as llm:
        install_crds(plane)
        plane.create_namespace(NAMESPACE)
        plane.kubectl("create", "serviceaccount", "caller", "-n", NAMESPACE)
        plane.kubectl("create", "role", "invoke", "-n", NAMESPACE, "--verb=invoke",
                      "--resource=agents.kagent.dev")
        plane.kubectl("create", "rolebinding", "invoke", "-n", NAMESPACE, "--role=invoke",
                      f"--serviceaccount={NAMESPACE}:caller")
        token = plane.kubectl("create", "token", "caller", "-n", NAMESPACE).stdout.strip()
        env = {"KAGENT_NAMESPACE": NAMESPACE}
        with RuntimeProcess(documents(llm.url), environ=env) as open_runtime, \
                RuntimeProcess(documents(llm.url),
                               environ={**env, "KAGENT_KUBECONFIG": str(plane.kubeconfig)}) as checked:
            baseline = OpenAI(base_url=open_runtime.openai_base_url, api_key="unused", max_retries=0)
            authed = OpenAI(base_url=checked.openai_base_url, api_key=token, max_retries=0)
            timed(baseline, 20)  # warm both
            started = time.perf_counter()
            timed(authed, 1)
            first_ms = (time.perf_counter() - started) * 1000
            timed(authed, 19)
            base, auth = [], []
            for _ in range(REQUESTS // 20):  # interleaved, so machine load hits both alike
                base += timed(baseline, 20)
                auth += timed(authed, 20)
            wrong = OpenAI(base_url=checked.openai_base_url, api_key="x" * 40, max_retries=0)
            refused = []
            for _ in range(50):
                started = time.perf_counter()
                try:
                    wrong.chat.completions.create(model="bench",
                                                  messages=[{"role": "user", "content": "hi"}])
                except AuthenticationError:
                    pass
                refused.append((time.perf_counter() - started) * 1000)
    result = {
        "requests": REQUESTS,
        "baseline_p50_ms": percentile(base, 50), "baseline_p99_ms": percentile(base, 99),
        "auth_p50_ms": percentile(auth, 50), "auth_p99_ms": percentile(auth, 99),
        "p50_ratio": percentile(auth, 50) / percentile(base, 50),
        "p99_ratio": percentile(auth, 99) / percentile(base, 99),
        "first_request_ms": first_ms,
        "refused_p50_ms": percentile(refused, 50),
        "targets": {"p50_ratio_at_most": TARGET_RATIO},
    }
    result["targets_met"] = result["p50_ratio"] <= TARGET_RATIO
    path = write_result("agent_auth", result)
    print(f"agent_auth: cached p50 {result['auth_p50_ms']:.2f} ms vs baseline "
          f"{result['baseline_p50_ms']:.2f} ms (x{result['p50_ratio']:.2f}); p99 "
          f"x{result['p99_ratio']:.2f}; first request {first_ms:.1f} ms; refused p50 "
          f"{result['refused_p50_ms']:.2f} ms -> {path}")


if __name__ == "__main__":
    main()
