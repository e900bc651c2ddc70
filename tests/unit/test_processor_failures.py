"""classify: what the same message would raise again (poison) against what can heal (transient)."""

from __future__ import annotations

import asyncpg
import nats.errors
import nats.js.errors
import pytest
from fincart_processor.failures import Failure, classify, timed_out
from fincart_processor.order_store import ConcurrentWrite
from pydantic import BaseModel, ValidationError


def _validation_error() -> ValidationError:
    class M(BaseModel):
        x: int

    try:
        M.model_validate({"x": "nope"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow"),
        asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax"),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"),
        asyncpg.exceptions.DatetimeFieldOverflowError("date/time field value out of range"),
        asyncpg.DataError("invalid input for query argument $6: date value out of range"),  # asyncpg's own encoding
        asyncpg.exceptions.CheckViolationError("violates check constraint"),
        asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds btree maximum"),
        OverflowError("date value out of range"),
        ValueError("webhook id or order id contains a NUL character"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        _validation_error(),
    ],
    ids=type,
)
def test_what_the_input_causes_is_poison(exc: BaseException) -> None:
    assert classify(exc) is Failure.POISON


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.LockNotAvailableError("could not obtain lock"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.IdleInTransactionSessionTimeoutError("terminating connection due to idle-in-transaction"),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.NoStreamResponseError(),
        ConcurrentWrite("1 orders changed under this batch"),
        KeyError("a bug is not the message's fault"),
    ],
    ids=type,
)
def test_what_can_heal_or_is_unforeseen_is_transient(exc: BaseException) -> None:
    assert classify(exc) is Failure.TRANSIENT


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), True),  # the client's bounds: acquire, connect, command_timeout
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), True),
        (asyncpg.exceptions.IdleInTransactionSessionTimeoutError("idle-in-transaction timeout"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), False),
        (asyncpg.DeadlockDetectedError("deadlock detected"), False),
        (ValueError("poison"), False),
    ],
    ids=type,
)
def test_timeouts_are_told_apart_for_the_metric(exc: BaseException, expected: bool) -> None:
    assert timed_out(exc) is expected
