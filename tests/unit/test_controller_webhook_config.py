"""The controller writes only the address and CA bundle of Kagent's own webhooks."""

from __future__ import annotations

from lightkube.resources.admissionregistration_v1 import ValidatingWebhookConfiguration

from kagent.controller.webhook_config import client_config_patch


def _configuration() -> ValidatingWebhookConfiguration:
    return ValidatingWebhookConfiguration.from_dict({
        "metadata": {"name": "kagent.dev"},
        "webhooks": [
            {"name": f"validate-{kind}.kagent.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"namespace": "kagent-system", "name": "kagent-webhook",
                                          "path": f"/validate-{kind}"}},
             "rules": [{"apiGroups": ["kagent.dev"], "apiVersions": ["v1alpha1"], "resources": [kind],
                        "operations": ["CREATE", "UPDATE"]}]}
            for kind in ("agents", "tools")
        ],
    })


def test_only_each_webhooks_client_config_is_replaced_with_its_own_path() -> None:
    service = {"namespace": "kagent-system", "name": "kagent-webhook", "port": 443}
    ops = client_config_patch(_configuration(), {"service": service, "caBundle": "Q0E="}, "kagent.dev")
    assert ops == [
        {"op": "test", "path": "/webhooks/0/name", "value": "validate-agents.kagent.dev"},
        {"op": "replace", "path": "/webhooks/0/clientConfig",
         "value": {"caBundle": "Q0E=", "service": {**service, "path": "/validate-agents"}}},
        {"op": "test", "path": "/webhooks/1/name", "value": "validate-tools.kagent.dev"},
        {"op": "replace", "path": "/webhooks/1/clientConfig",
         "value": {"caBundle": "Q0E=", "service": {**service, "path": "/validate-tools"}}},
    ]
    assert all(op["path"].endswith(("/name", "/clientConfig")) for op in ops), "rules and policies untouched"


def test_a_url_gets_the_webhooks_path() -> None:
    ops = client_config_patch(_configuration(), {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}, "kagent.dev")
    assert ops[1]["value"] == {"caBundle": "Q0E=", "url": "https://127.0.0.1:9443/validate-agents"}
