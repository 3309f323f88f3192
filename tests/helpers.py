"""Assertions shared by the tests."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


async def expect_status(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await ``call`` and assert it fails with ``code``; returns the error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The ``google.rpc.Status`` a server sent in the trailers."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    return status


def detail(error: grpc.aio.AioRpcError, kind: type[Any]) -> Any:
    """The first detail of ``kind`` (e.g. ``BadRequest``) in the error's status."""
    for packed in rich_status(error).details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} detail in {rich_status(error)}")


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The field names of the BadRequest detail."""
    return [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]


def reason(error: grpc.aio.AioRpcError) -> str:
    """The stable ErrorInfo reason."""
    return str(detail(error, error_details_pb2.ErrorInfo).reason)
