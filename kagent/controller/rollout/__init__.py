"""Progressive delivery of Agents: canary and blue-green rollouts, judged from the runtimes' own
metrics, with every rolled-out spec kept as a ControllerRevision.

- :mod:`.metrics` — what a pod's /metrics says, the difference over a window, the verdict (pure);
- :mod:`.plan` — given where the rollout is and what was observed, the next action (pure);
- :mod:`.objects` — the stable and candidate Deployments, Services and revisions (pure);
- :mod:`.shell` — the I/O: revisions, pods, scrapes; called by the Agent reconciler.
"""
