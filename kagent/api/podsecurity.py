"""What an Agent's pod overrides may change: only tighten the restricted defaults.

Agent pods run under the Pod Security "restricted" profile. A tenant who may create Agents must
not get a privileged, root or host-reaching pod through ``spec.pod``, nor join the selectors of
Kagent's Services, NetworkPolicies and autoscalers through ``spec.pod.labels``. These rules are
checked when an Agent is parsed, so the webhook refuses such an Agent (naming the field) and the
controller never renders one that slipped past admission.
"""

from __future__ import annotations

from typing import Any

from kagent.api.base import GROUP
from kagent.api.labels import INSTANCE_LABEL, MANAGED_BY_LABEL, NAME_LABEL

RESERVED_LABEL_PREFIXES = (f"{GROUP}/",)
RESERVED_LABELS = frozenset({MANAGED_BY_LABEL, NAME_LABEL, INSTANCE_LABEL})
"""Labels Kagent sets on agent pods and selects them by; a pod override may not set them."""

_SECURITY_CONTEXT_FIELDS = frozenset({
    "allowPrivilegeEscalation", "appArmorProfile", "capabilities", "privileged", "procMount",
    "readOnlyRootFilesystem", "runAsGroup", "runAsNonRoot", "runAsUser", "seLinuxOptions",
    "seccompProfile", "windowsOptions",
})
_SAFE_PROFILE_TYPES = ("RuntimeDefault", "Localhost")
_SAFE_SELINUX_TYPES = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")


def reserved_label_problems(labels: dict[str, str]) -> list[str]:
    return [f"{key}: Kagent sets this label and selects agent pods by it; choose another key"
            for key in sorted(labels)
            if key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIXES)]


def security_context_problems(context: dict[str, Any]) -> list[str]:
    """Every way ``context`` (a container securityContext) would loosen the restricted
    defaults, each naming its field; empty if it only tightens them."""
    problems = [f"{key}: not a container securityContext field Kagent accepts"
                for key in sorted(set(context) - _SECURITY_CONTEXT_FIELDS)]

    def must(ok: bool, field: str, why: str) -> None:
        if not ok:
            problems.append(f"{field}: {why}")

    must(context.get("privileged") in (None, False), "privileged", "must be false")
    must(context.get("allowPrivilegeEscalation") in (None, False), "allowPrivilegeEscalation",
         "must be false")
    must(context.get("runAsNonRoot") in (None, True), "runAsNonRoot", "must be true")
    must(context.get("runAsUser") != 0, "runAsUser", "must not be 0 (root)")
    must(context.get("readOnlyRootFilesystem") in (None, True), "readOnlyRootFilesystem",
         "must be true")
    must(context.get("procMount") in (None, "Default"), "procMount", "must be Default")
    capabilities = context.get("capabilities")
    if capabilities is not None:
        if not isinstance(capabilities, dict):
            problems.append("capabilities: must be an object with drop (and no add)")
        else:
            must(not capabilities.get("add"), "capabilities.add", "no capability may be added")
            must("ALL" in (capabilities.get("drop") or []), "capabilities.drop", "must include ALL")
    for field in ("seccompProfile", "appArmorProfile"):
        profile = context.get(field)
        if profile is not None:
            must(isinstance(profile, dict) and profile.get("type") in _SAFE_PROFILE_TYPES,
                 f"{field}.type", "must be RuntimeDefault or Localhost")
    selinux = context.get("seLinuxOptions")
    if selinux is not None:
        ok = isinstance(selinux, dict) and not selinux.get("user") and not selinux.get("role") and \
            selinux.get("type") in (None, *_SAFE_SELINUX_TYPES)
        must(ok, "seLinuxOptions", "may only set level, or a container type; not user or role")
    windows = context.get("windowsOptions")
    if isinstance(windows, dict):
        must(not windows.get("hostProcess"), "windowsOptions.hostProcess", "must be false")
    return problems
