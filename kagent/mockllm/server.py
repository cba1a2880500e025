"""Running the mock: in a background thread for tests (:class:`MockLLM`), or in the foreground
for ``kagent mock-llm`` (:func:`serve`).

The thread mode binds the socket itself before starting uvicorn, so the port is known (and
free) the moment :meth:`MockLLM.start` returns, and other processes — agent runtimes started by
a test — can reach it at :attr:`MockLLM.url`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import uvicorn

from kagent.local.services import AsgiServer

from .app import create_app
from .script import Script, ScriptSource, load_script, merge_scripts
from .state import MockState, RecordedCall


class MockLLM:
    """A scripted LLM server speaking the OpenAI, Anthropic and Bedrock wire formats.

    >>> with MockLLM({"rules": [{"contains": "hi", "content": "hello!"}]}) as llm:
    ...     client = openai.OpenAI(base_url=llm.openai_base_url, api_key="x")
    """

    def __init__(
        self,
        script: ScriptSource = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.state = MockState(script)
        self._host = host
        self._server = AsgiServer(create_app(self.state), host=host, port=port, lifespan="off",
                                  log_level=log_level)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> MockLLM:
        if self._server.port is None:
            try:
                self._server.start(timeout)
            except RuntimeError:
                raise RuntimeError("the mock LLM server did not start") from None
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MockLLM:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server.port is None:
            raise RuntimeError("MockLLM is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL: the Anthropic SDK's ``base_url`` and boto3's ``endpoint_url``."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI SDK's ``base_url`` (it expects the ``/v1`` suffix)."""
        return f"{self.url}/v1"

    # -- script and observations ------------------------------------------------------------

    @property
    def script(self) -> Script:
        return self.state.script

    def set_script(self, script: ScriptSource) -> Script:
        """Replace the script (counters restart); raises ``ScriptError`` if it is invalid."""
        return self.state.replace_script(script)

    @property
    def calls(self) -> list[RecordedCall]:
        """Every request answered since start or the last :meth:`reset`, oldest first."""
        return self.state.calls

    def rule_counts(self) -> dict[str, int]:
        """How often each rule (by ``name`` or ``rules[i]``, or ``default``) has answered."""
        return self.state.rule_counts()

    def model_counts(self) -> dict[str, int]:
        return self.state.model_counts()

    def reset(self) -> None:
        """Forget calls and counters; the script stays."""
        self.state.reset()


def serve(script_paths: str | Path | Sequence[str | Path] | None, port: int = 8000,
          host: str = "127.0.0.1") -> None:
    """Run the mock in the foreground until interrupted (what ``kagent mock-llm`` calls).

    Several scripts are merged in order (:func:`merge_scripts`). They are validated before the
    port is opened so a bad file fails fast with a message naming the rule and field.
    """
    if script_paths is None or isinstance(script_paths, (str, Path)):
        script = load_script(script_paths)
    else:
        script = merge_scripts([load_script(path) for path in script_paths])
    state = MockState(script)
    # Every log line is a diagnostic: uvicorn sends its access log to stdout unless told not to.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    uvicorn.run(create_app(state), host=host, port=port, log_level="info", lifespan="off",
                log_config=log_config)
