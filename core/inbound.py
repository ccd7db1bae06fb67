"""Inbound webhooks as use cases (DESIGN §10): hooks made, listed and deleted by a project's
clients, and the runs that signed requests start.

A request to a hook is checked in this order (the HTTP adapter's): the hook exists (else 404),
its signature (401), only then is its body read as JSON (415 if it is not), so nothing of an
unsigned body is ever parsed. The run it starts has
`trigger = {"type": "webhook", "id": <hook id>}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from core.errors import NotFound, Problem, ValidationFailed
from core.idempotency import IdempotencyKey
from core.ports import Clock, Store, WebhookStore
from core.service import Started, WorkflowService
from core.validation import parse_body
from core.webhooks import BadSignature, Webhook, WebhookSpec, new_secret, verify

log = structlog.get_logger("cortexd.webhooks")


class WebhookService:
    def __init__(
        self,
        store: Store,
        hooks: WebhookStore,
        runs: WorkflowService,
        clock: Clock,
        new_id: Callable[[], str],
    ) -> None:
        self._store = store
        self._hooks = hooks
        self._runs = runs
        self._clock = clock
        self._new_id = new_id

    async def list(self, project_id: str) -> list[Webhook]:
        return await self._hooks.list_webhooks(project_id)

    async def get(self, project_id: str, hook_id: str) -> Webhook:
        hook = await self._hooks.get_webhook(project_id, hook_id)
        if hook is None:
            raise NotFound("webhook", hook_id)
        return hook

    async def create(self, project_id: str, data: Any) -> Webhook:
        """The hook with its secret: the only time the secret is shown."""
        spec = parse_body(WebhookSpec, data, "a webhook")
        if await self._store.get_graph(project_id, spec.workflow_id) is None:
            problem = Problem("/workflow_id", f"no graph {spec.workflow_id!r} in this project")
            raise ValidationFailed(f"graph {spec.workflow_id!r} not found", [problem])
        hook = Webhook(
            id=spec.id or self._new_id(),
            project_id=project_id,
            workflow_id=spec.workflow_id,
            tolerance_s=spec.tolerance_s,
            created_at=self._clock.now(),
        )
        secret = new_secret()
        stored = await self._hooks.create_webhook(hook, secret)
        return stored.model_copy(update={"secret": secret})

    async def delete(self, project_id: str, hook_id: str) -> None:
        await self._hooks.delete_webhook(project_id, hook_id)

    async def find(self, hook_id: str) -> Webhook:
        """The hook a request names, with its secret; NotFound (404) if there is none."""
        hook = await self._hooks.get_webhook(None, hook_id)
        if hook is None or hook.secret is None:
            raise NotFound("webhook", hook_id)
        return hook

    def authenticate(
        self, hook: Webhook, body: bytes, signature: str | None, timestamp: str | None
    ) -> None:
        """BadSignature (401) unless the request is signed with the hook's secret."""
        assert hook.secret is not None
        try:
            verify(hook, hook.secret, body, signature, timestamp, self._clock.now())
        except BadSignature as exc:
            log.warning("webhook_refused", hook_id=hook.id, reason=str(exc))
            raise

    async def start(
        self, hook: Webhook, run_input: dict[str, Any], key: IdempotencyKey | None = None
    ) -> Started:
        """The run of an authenticated request, with `trigger.type = "webhook"`."""
        return await self._runs.start_run(
            hook.project_id,
            hook.workflow_id,
            run_input,
            trigger={"type": "webhook", "id": hook.id},
            key=key,
        )
