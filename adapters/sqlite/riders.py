"""Writes that commit in the same transaction as one LangGraph task's writes.

A node is durably complete when LangGraph saves its task's writes (`aput_writes`): after a crash
it will not run again. Its "completed" node state rides along in that very transaction, so the
store never says "completed" about a node that would run again, nor the other way round.
"""

from __future__ import annotations

from adapters.sqlite.writer import Op


class TaskRiders:
    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], list[Op]] = {}

    def add(self, thread_id: str, task_id: str, op: Op) -> None:
        self._waiting.setdefault((thread_id, task_id), []).append(op)

    def take(self, thread_id: str, task_id: str) -> list[Op]:
        return self._waiting.pop((thread_id, task_id), [])

    def drop_thread(self, thread_id: str) -> int:
        """Forget what waits for a thread whose writes will not come (cancelled, stopped)."""
        keys = [key for key in self._waiting if key[0] == thread_id]
        for key in keys:
            del self._waiting[key]
        return len(keys)

    def __len__(self) -> int:
        return len(self._waiting)
