"""Why a batch failed: the message's fault (poison, isolated and dead-lettered) or a condition that can heal
(retried, bounded). Pure: the consumer acts on the answer."""

from __future__ import annotations

import enum

import asyncpg
import nats.errors

# SQLSTATE classes of errors the same input raises every time: 22 data exception (numeric overflow,
# invalid text or datetime, asyncpg's "invalid input for query argument"), 23 integrity constraint
# violation, 54 program limit exceeded (an index row too large).
POISON_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
# What PostgreSQL answers when one of the processor's bounds (runner.create_pool) cut a session short:
# 57014 query_canceled (statement_timeout, or the client's cancel at its command timeout), 25P03
# idle_in_transaction_session_timeout. Both are transient (class 57 and 25 are not poison).
TIMEOUT_SQLSTATES = frozenset({"57014", "25P03"})


class Failure(enum.Enum):
    POISON = "poison"
    TRANSIENT = "transient"


def classify(exc: BaseException) -> Failure:
    """POISON for errors that the same message raises on every attempt: value errors of the domain code and
    parsing (ValueError, incl. pydantic's ValidationError and UnicodeError), arithmetic (a datetime whose
    UTC conversion overflows) and the database's data errors. Everything else is TRANSIENT: connection
    lost, serialization failure, deadlock, broker down, timeouts, and also errors nobody foresaw, because a
    bug is no message's fault: retrying it stalls the partition visibly instead of dead-lettering every
    message that meets it."""
    if isinstance(exc, asyncpg.PostgresError):
        return Failure.POISON if (exc.sqlstate or "")[:2] in POISON_SQLSTATE_CLASSES else Failure.TRANSIENT
    if isinstance(exc, nats.errors.Error | OSError | TimeoutError | asyncpg.InterfaceError):
        return Failure.TRANSIENT
    if isinstance(exc, ValueError | ArithmeticError):
        return Failure.POISON
    return Failure.TRANSIENT


def timed_out(exc: BaseException) -> bool:
    """A wait cut by a bound (the client's or PostgreSQL's): counted in fincart_processor_db_timeouts_total."""
    if isinstance(exc, asyncpg.PostgresError):
        return exc.sqlstate in TIMEOUT_SQLSTATES
    return isinstance(exc, TimeoutError)
