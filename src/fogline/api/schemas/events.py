"""Platform events as the API answers them (the events themselves are `bus.events`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fogline.bus.events import PlatformEvent


class StoredEventOut(BaseModel):
    seq: int = Field(description="the event's place in the stream; resume after it")
    event: PlatformEvent


class EventPage(BaseModel):
    events: list[StoredEventOut]
    last_seq: int = Field(description="pass as `after` for the next page (`after` when none came)")
