"""RequestContext: who asks and how, the routing hints that do not travel in the OpenAI body."""

from __future__ import annotations

from dataclasses import dataclass

from suanli.router.core.keys import KeyPolicy

__all__ = ["RequestContext"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks and how: the routing hints that do not travel in the OpenAI body."""

    work_class: str | None = None  # from X-Suanli-Class
    origin: str | None = None  # from X-Suanli-Origin
    key_id: str | None = None
    request_id: str | None = None
    allowed_regions: frozenset[str] | None = None
    default_class: str | None = None  # the key's, used when neither header nor service_tier says
    key: KeyPolicy | None = None  # the virtual key's policy: its budget is held with each request
    # Known work the planner's forecast took in when it was booked (a batch line): served, it
    # is not counted again as new demand.
    booked: bool = False
    input_tokens: int | None = None  # the prompt's tokens if the caller counted them (a batch line)
    session: str | None = None  # from X-Suanli-Session: the conversation it continues (cache affinity)
