"""What a request may carry: the JSON bodies (strict: no `false` for a number, no "1" for an
integer) and the form of the ids in paths. The routes parse with these, and the OpenAPI
document describes them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool

from core.domain import ID_PATTERN

# Run ids are made by cortexd: lowercase UUIDs, as str(uuid4()) spells them.
RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

GraphId = Annotated[str, Field(pattern=ID_PATTERN)]
JsonObject = Annotated[dict[str, Any], Strict()]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateRunBody(Body):
    workflow_id: GraphId
    input: JsonObject | None = None


class ExecuteBody(Body):
    input: JsonObject | None = None
    from_start: StrictBool = False


class ResumeBody(Body):
    value: Any = None
