"""Domain errors. The HTTP adapter maps each class to a status code in one place."""

from __future__ import annotations

from dataclasses import dataclass


class CortexdError(Exception):
    """Base of every error cortexd raises on purpose; its message is safe to show a client."""


class NotFound(CortexdError):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(CortexdError):
    """The request is valid but contradicts the current state (e.g. execute a completed run)."""


class InvalidTransition(CortexdError):
    def __init__(self, run_id: str, current: str, target: str, action: str | None = None) -> None:
        what = action or f"move to {target!r}"
        super().__init__(f"cannot {what}: run {run_id!r} is {current!r}")
        self.run_id = run_id
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: where (a JSON pointer) and why."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class ValidationFailed(CortexdError):
    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


class InvalidCursor(CortexdError):
    """A list's `cursor` that this server did not give (or gave for another list)."""

    def __init__(self) -> None:
        super().__init__(
            "query parameter 'cursor' is not one this server gave; "
            'use the URL of the answer\'s Link rel="next", or leave the cursor out'
        )


class LimitExceeded(CortexdError):
    """An input is larger than a configured limit."""


class PluginError(CortexdError):
    """A plugin failed to load or broke the plugin contract; the message names the plugin."""


class LeaseLost(CortexdError):
    """A write of a run's execution by a daemon that no longer holds the run's lease (it
    stalled past it, or the run was cancelled or recovered meanwhile): nothing was written."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"this daemon no longer executes run {run_id!r}")
        self.run_id = run_id


class StoreUnavailable(CortexdError):
    """The store cannot take writes (or answer) now: its database is down, unreachable or read
    only. Nothing of the request was kept; it may be tried again."""


class StoreFull(StoreUnavailable):
    """The store's disk is full: nothing of the request was kept."""
