"""Every label, annotation and well-known name Kagent puts on objects or looks up in a cluster,
defined once (as Kubernetes keeps its own in ``k8s.io/api``'s well-known labels).

They live in the API layer because they are part of the contract with users and their tools
(``kubectl get pods -l kagent.dev/agent=writer``, a GitOps tool ignoring the config hash) and
because every layer — the generated CRDs included — needs them. The Helm chart writes some of
them too (the webhook configurations, the Lease's RBAC); a unit test keeps it in step.
"""

from __future__ import annotations

from kagent.api.base import GROUP

# --- labels ----------------------------------------------------------------------------------------

AGENT_LABEL = f"{GROUP}/agent"
"""On every child of an Agent and on its pods: the Agent's name (the pods' selector too)."""
WORKFLOW_LABEL = f"{GROUP}/workflow"
"""On a WorkflowRun: the Workflow it runs (set by ``kagent workflow run``, checked by the
webhook)."""
SCHEDULE_LABEL = f"{GROUP}/schedule"
"""On a WorkflowRun a Workflow's schedule started: the schedule's name (``kubectl get runs -l
kagent.dev/schedule=nightly``)."""
WORKFLOW_RUN_LABEL = f"{GROUP}/workflowrun"
"""On objects a WorkflowRun owns (the ConfigMaps holding large step outputs)."""
REVISION_HASH_LABEL = f"{GROUP}/revision-hash"
"""On the pods of an Agent that rolls out by Canary or BlueGreen, and on its ControllerRevisions:
the config hash of the revision they run (blue-green Services select by it)."""
ROLLOUT_TRACK_LABEL = f"{GROUP}/rollout-track"
"""On the candidate Deployment of a canary or blue-green rollout and its pods: canary or
preview."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGER = "kagent"
"""The value of ``app.kubernetes.io/managed-by`` and ``part-of`` on what Kagent makes."""

# --- annotations -----------------------------------------------------------------------------------

CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
"""On an agent's pod template: a digest of everything the pod reads (its config, Tools, Memory,
Secrets), so a change to any of them rolls the Deployment."""
ROLLOUT_ACTION_ANNOTATION = f"{GROUP}/rollout-action"
"""On an Agent: a ``kagent rollout promote|abort`` the controller has not acted on yet
(promote, promote-full or abort); the controller removes it once done."""
SCHEDULED_AT_ANNOTATION = f"{GROUP}/scheduled-at"
"""On a WorkflowRun a schedule started: the slot it was started for (RFC 3339, UTC)."""
WEBHOOK_CA_ROTATED_ANNOTATION = f"{GROUP}/ca-rotated-at"
"""On the webhook CA Secret: when its newest CA was made (the old one stays trusted meanwhile)."""
RESUBMITTED_FROM_ANNOTATION = f"{GROUP}/resubmitted-from"
"""On a WorkflowRun made by ``kagent workflow resubmit``: the run whose input it runs again."""
LOCAL_READY_ANNOTATION = f"{GROUP}/ready-locally"
"""On an agent pod of ``kagent dev``: its local process answers its readiness probe (kwok's dev
stage then marks the pod Ready)."""

# --- well-known names ------------------------------------------------------------------------------

FINALIZER = f"{GROUP}/finalizer"
"""The controller's finalizer (kopf's persistence setting)."""
CONTROLLER_NAMESPACE = "kagent-system"
"""Where the controller runs by default (its Lease, the webhook's CA Secret)."""
LEASE_NAME = "kagent-controller"
"""The leader-election Lease in the controller's namespace."""
EVENT_COMPONENT = "kagent-controller"
"""The reporting component of the Events the controller posts."""
WEBHOOK_CONFIGURATION_NAME = GROUP
"""The name of both the validating and the mutating webhook configuration."""
WEBHOOK_CA_SECRET = "kagent-webhook-ca"
"""The Secret holding the self-managed webhook CA, in the controller's namespace."""
WEBHOOK_SERVICE = "kagent-webhook"
"""The Service in front of the webhook (the chart's)."""

AGENT_TOKEN_AUDIENCE = GROUP
"""Audience of the projected token an agent calls other agents with: the agents accept it, the
API server does not, so an agent that receives one cannot replay it there."""
AGENT_TOKEN_FILE_ENV = "KAGENT_AGENT_TOKEN_FILE"
"""Environment variable naming the file of that token in an agent pod (the kubelet rotates it)."""
AGENT_AUTH_CLUSTER_ROLE = "kagent-agent-auth"
"""The chart's ClusterRole letting an agent check its callers (TokenReview and
SubjectAccessReview, as ``system:auth-delegator``); the chart prefixes its release name."""

LOCAL_PODS_URL_ENV = "KAGENT_LOCAL_PODS_URL"
"""Environment of a controller run beside local pods (``kagent dev``, the tests): the local pod
realiser's URL, where the controller finds each pod's local ports to read its metrics and to
call it (rollout analysis and evaluation), as it would at the pod's IP in a cluster."""

# --- field managers (server-side apply) ------------------------------------------------------------

FIELD_MANAGER = "kagent"
"""The controller (and everything that reconciles like it)."""
CLI_FIELD_MANAGER = "kagent-cli"
"""The ``kagent`` command line."""
CRD_FIELD_MANAGER = "kagent-install"
"""Whoever installs Kagent's CRDs (``kagent install``, ``kagent dev``, the tests)."""
TEST_FIELD_MANAGER = "kagent-tests"
"""The clients of the pytest fixtures (``kagent.testing``)."""
CA_INJECTOR_FIELD_MANAGER = "kagent-ca-injector"
"""The controller writing its webhook CA into the chart's webhook configurations (their
``caBundle`` only)."""

# --- the test fixtures -------------------------------------------------------------------------

TEST_NAMESPACE_LABEL = f"{GROUP}/test"
"""On the namespaces the ``namespace`` fixture creates."""

LOCAL_CONTROLLER_ACCOUNT = "kagent-controller"
"""The ServiceAccount a controller run as a process (local environments) calls agents as: the
chart's controller account's name."""
CLI_ACCOUNT = "kagent-cli"
"""The ServiceAccount ``kagent chat`` mints tokens for when the kubeconfig's user (a client
certificate, as in the local environment) has no bearer token to send."""
