"""Wire types of feature flags."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import msgspec

FLAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def check_flag(flag: str) -> None:
    """Flag names are keys SDKs look up: 1 to 100 letters, digits, `_ . : -`, starting alphanumeric."""
    if not FLAG.match(flag):
        raise ValueError("flag is 1 to 100 letters, digits or _ . : -, starting with a letter or digit"
                         " - at `$.flag`")


class FlagIn(msgspec.Struct, kw_only=True):
    """`POST …/feature-flags`."""

    flag: str
    enabled: bool = False

    def __post_init__(self) -> None:
        check_flag(self.flag)


class FlagPatch(msgspec.Struct, kw_only=True):
    """`PATCH …/feature-flags/{id}`: absent fields are left alone."""

    flag: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.flag, msgspec.UnsetType):
            check_flag(self.flag)


class FeatureFlag(msgspec.Struct, kw_only=True):
    """A feature flag as the API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    flag: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


class Flags(msgspec.Struct):
    """`GET /v1/ingest/flags`: every flag of the project and whether it is on."""

    flags: dict[str, bool]
