"""The soak's daemons (killed with SIGKILL and started again on the same store, looked at for
runs left under a dead owner) and its end (every run brought to a finish, the log read)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from soak_clients import Api, P, World

from tests.support.process import DaemonProcess

JSON = dict[str, Any]
DRAIN_S = 180.0  # the end: how long runs get to finish before the rest are cancelled
LEASE_S = 15.0  # [execution] lease_s, the default


@dataclass
class Fleet:
    """The daemons, their kills and restarts, and every process they ran as."""

    daemons: list[DaemonProcess]
    deaths: dict[int, int] = field(default_factory=dict)  # pid -> monotonic ns before SIGKILL
    pids: list[int] = field(default_factory=list)
    kills: int = 0
    restarts: int = 0
    exits: list[JSON] = field(default_factory=list)  # daemons that ended on their own

    live: dict[int, str] = field(default_factory=dict)  # daemon index -> its instance id
    samples: int = 0  # looks at the running runs, each a lease and more after a kill
    orphans: list[JSON] = field(default_factory=list)

    def start(self, process: DaemonProcess) -> None:
        process.start(timeout=60)
        assert process.proc is not None
        self.pids.append(process.proc.pid)
        _, body = process.request("GET", "/readyz")
        self.live[self.daemons.index(process)] = body["instance"]

    def instances(self) -> set[str]:
        return set(self.live.values())

    async def kill_and_restart(self, process: DaemonProcess) -> None:
        assert process.proc is not None
        pid = process.proc.pid
        self.live.pop(self.daemons.index(process), None)
        self.deaths[pid] = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(process.proc.wait, 30)
        self.kills += 1
        await asyncio.to_thread(self.start, process)
        self.restarts += 1

    async def sample(self, api: Api) -> None:
        """No run is left `running` under a dead daemon's name once a lease and a margin have
        passed since the kill (a survivor or the restarted daemon takes it back)."""
        self.samples += 1
        running = await api.pages(f"{P}/workflows/runs?status=running&limit=1000")
        live = self.instances()
        for item in running:
            if item.get("owner") is not None and item["owner"] not in live:
                self.orphans.append({"run_id": item["id"], "owner": item["owner"]})

    async def chaos(self, api: Api, until: float, every: float, rng: random.Random) -> None:
        """A kill every ~`every` s (±25 %) until the deadline, a look for orphaned runs
        `LEASE_S + 5` s after each; a daemon that exits by itself is noted (a violation) and
        started again."""
        next_kill = time.monotonic() + every * rng.uniform(0.75, 1.25)
        look_at: float | None = None
        while time.monotonic() < until:
            for process in self.daemons:
                if process.proc is not None and process.proc.poll() is not None:
                    self.live.pop(self.daemons.index(process), None)
                    self.exits.append(
                        {"code": process.proc.returncode, "log": process.log()[-2000:]}
                    )
                    await asyncio.to_thread(self.start, process)
                    self.restarts += 1
            now = time.monotonic()
            if look_at is not None and now >= look_at:
                look_at = None
                await self.sample(api)
            if now >= next_kill:
                await self.kill_and_restart(rng.choice(self.daemons))
                next_kill = time.monotonic() + every * rng.uniform(0.75, 1.25)
                if next_kill - time.monotonic() > LEASE_S + 5:
                    look_at = time.monotonic() + LEASE_S + 5
            await asyncio.sleep(0.2)


async def drain(api: Api, world: World) -> int:
    """Let every run finish: answer waiting runs, resume paused ones; after DRAIN_S cancel what
    is left. Returns how many were cancelled here."""
    cancelled = 0
    deadline = time.monotonic() + DRAIN_S
    for _ in range(100_000):
        open_runs = await api.pages(f"{P}/workflows/runs?status=pending,running,paused&limit=1000")
        if not open_runs:
            return cancelled
        late = time.monotonic() > deadline
        for item in open_runs:
            path = f"{P}/workflows/runs/{item['id']}"
            if late:
                answer = await api.call("end_cancel", "POST", f"{path}/cancel", {})
                if answer is not None and answer[0] == 200:
                    cancelled += 1
                    world.acked[(item["id"], "cancel")] += 1
            elif item["status"] == "paused":
                value = {"value": "yes"} if item["pause_reason"] == "input_required" else {}
                answer = await api.call("end_resume", "POST", f"{path}/resume", value)
                if answer is not None and answer[0] == 200:
                    world.acked[(item["id"], "resume")] += 1
        if late and time.monotonic() > deadline + 60:
            return cancelled
        await asyncio.sleep(0.5)
    return cancelled


def log_seqs(storage: dict[str, str]) -> list[int]:
    """Every seq of the store's event log, straight from the store."""
    if "url" in storage:
        import psycopg

        with psycopg.connect(storage["url"]) as conn:
            return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
    with sqlite3.connect(storage["path"]) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
