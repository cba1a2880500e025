"""Who is calling this agent: one home for the caller identity the whole runtime keys data by.

The authentication middleware sets it per request (`set_caller`); the task store, conversations,
pending human questions and idempotency records read it (`current_caller().identity`) so callers
never see each other's data. Outside a request (or with authentication explicitly disabled) the
caller is anonymous.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Literal

CallerKind = Literal["user", "serviceaccount", "apikey", "anonymous"]


@dataclass(frozen=True)
class Caller:
    identity: str
    """A stable string: `system:serviceaccount:ns:name`, `user:alice`, `apikey:<key name>`, or
    `anonymous`."""
    kind: CallerKind
    groups: tuple[str, ...] = ()


ANONYMOUS = Caller(identity="anonymous", kind="anonymous", groups=())

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("kagent_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the request being served (anonymous when none was set)."""
    return _caller.get()


def set_caller(caller: Caller) -> contextvars.Token[Caller]:
    """Make `caller` the current caller in this context; reset with `reset_caller(token)`."""
    return _caller.set(caller)


def reset_caller(token: contextvars.Token[Caller]) -> None:
    _caller.reset(token)
