"""The web dashboard behind ``kagent dashboard``: agents, chat, workflows and live runs.

It acts only with the viewer's own Kubernetes identity — the user's kubeconfig when run locally,
the signed-in user's bearer token when deployed in a cluster — so it never shows or does more
than that user may. Pages are fed by Kubernetes watches pushed to the browser as Server-Sent
Events. The pure parts (what a page shows of an object, a workflow's graph, agent metrics, run
input checks) are separate from the I/O shell (:mod:`kagent.dashboard.app`).
"""
