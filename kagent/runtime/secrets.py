"""Secret values in the runtime: from environment variables set by the Deployment (via
secretKeyRef), or from Secret manifests given to `kagent runtime -f` outside a cluster."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from kagent.api.base import SecretKeySelector
from kagent.api.secrets import secret_env_name


class MissingSecretError(LookupError):
    """A referenced Secret key has no value here; the message says how to provide it."""


class SecretResolver:
    def __init__(self, secret_manifests: list[dict[str, Any]] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ
        self._values: dict[tuple[str, str], str] = {}
        self._handed_out: set[str] = set()
        for manifest in secret_manifests or []:
            name = manifest["metadata"]["name"]
            for key, value in (manifest.get("data") or {}).items():
                self._values[(name, key)] = base64.b64decode(value).decode()
            for key, value in (manifest.get("stringData") or {}).items():
                self._values[(name, key)] = str(value)

    def get(self, ref: SecretKeySelector) -> str:
        env_name = secret_env_name(ref)
        if env_name in self._environ:
            return self._remember(self._environ[env_name])
        if (ref.name, ref.key) in self._values:
            return self._remember(self._values[(ref.name, ref.key)])
        raise MissingSecretError(
            f'key "{ref.key}" of Secret "{ref.name}" is not available: pass the Secret manifest '
            f"with -f, or set the environment variable {env_name}"
        )

    def get_optional(self, ref: SecretKeySelector | None) -> str | None:
        return None if ref is None else self.get(ref)

    def _remember(self, value: str) -> str:
        if len(value) >= 4:  # shorter values would blank out ordinary words
            self._handed_out.add(value)
        return value

    def redact(self, text: str) -> str:
        """``text`` with every secret value handed out so far replaced by ``[REDACTED]``.

        Provider error messages sometimes echo the credential they were given; everything the
        runtime returns to a caller, logs or puts on a span about an error goes through here.
        """
        for value in sorted(self._handed_out, key=len, reverse=True):
            text = text.replace(value, "[REDACTED]")
        return text
