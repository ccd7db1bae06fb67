"""Inbound webhooks in the store, on both databases (DESIGN §10): the `WebhookStore` port.

A hook's id is the table's primary key, across projects (`POST /api/hooks/{id}` names none).
Its secret is a column of its own, read only for the signature check, never put in `body`.
"""

from __future__ import annotations

from adapters.sql.tx import Reads, Tx, Writes
from core.errors import Conflict, NotFound
from core.webhooks import Webhook


class SqlWebhooks:
    def __init__(self, writer: Writes, reads: Reads) -> None:
        self._writer = writer
        self._reads = reads

    async def list_webhooks(self, project_id: str) -> list[Webhook]:
        rows = await self._reads.all(
            "SELECT body FROM webhooks WHERE project_id = ? ORDER BY id", (project_id,)
        )
        return [Webhook.model_validate_json(row[0]) for row in rows]

    async def get_webhook(self, project_id: str | None, hook_id: str) -> Webhook | None:
        if project_id is None:
            rows = await self._reads.all(
                "SELECT body, secret FROM webhooks WHERE id = ?", (hook_id,)
            )
            if not rows:
                return None
            hook = Webhook.model_validate_json(rows[0][0])
            return hook.model_copy(update={"secret": rows[0][1]})
        rows = await self._reads.all(
            "SELECT body FROM webhooks WHERE id = ? AND project_id = ?", (hook_id, project_id)
        )
        return Webhook.model_validate_json(rows[0][0]) if rows else None

    async def create_webhook(self, hook: Webhook, secret: str) -> Webhook:
        stored = hook.model_copy(update={"secret": None})

        async def op(tx: Tx) -> Webhook:
            made = await tx.fetchall(
                "INSERT INTO webhooks (id, project_id, workflow_id, secret, body) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                (
                    stored.id,
                    stored.project_id,
                    stored.workflow_id,
                    secret,
                    stored.model_dump_json(exclude={"secret"}),
                ),
            )
            if not made:
                raise Conflict(f"webhook {stored.id!r} already exists; choose another id")
            return stored

        return await self._writer.write(op, small=True)

    async def delete_webhook(self, project_id: str, hook_id: str) -> None:
        async def op(tx: Tx) -> None:
            gone = await tx.fetchall(
                "DELETE FROM webhooks WHERE project_id = ? AND id = ? RETURNING id",
                (project_id, hook_id),
            )
            if not gone:
                raise NotFound("webhook", hook_id)

        await self._writer.write(op, small=True)
