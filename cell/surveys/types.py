"""Wire types of surveys and their responses, and the checks of a survey's definition and targeting.

`definition` and `targeting` are kept as the JSON the dashboard sent (widgets put
their own extra keys in them: scale labels, placeholders, sampling), so they are
typed as objects and checked here rather than decoded into Structs that would
drop what they do not name.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from cell.users import EndUserIn

Source = Literal["widget", "sdk", "api"]
MAX_NAME = 200
MAX_QUESTIONS = 100


def _at(path: str) -> str:
    return f" - at `$.{path}`"


def check_definition(definition: dict[str, Any], at: str = "definition") -> None:
    """`{type, title, questions, thankYouMessage}`: questions a non-empty list of `{id, type, text, options?}`."""
    for field in ("type", "title", "thankYouMessage"):
        value = definition.get(field)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"Expected `str`{_at(f'{at}.{field}')}")
    questions = definition.get("questions")
    if not isinstance(questions, list) or not questions:
        raise ValueError(f"a survey needs a non-empty list of questions{_at(f'{at}.questions')}")
    if len(questions) > MAX_QUESTIONS:
        raise ValueError(f"at most {MAX_QUESTIONS} questions{_at(f'{at}.questions')}")
    seen: set[str] = set()
    for i, question in enumerate(questions):
        here = f"{at}.questions[{i}]"
        if not isinstance(question, dict):
            raise ValueError(f"Expected `object`{_at(here)}")
        qid = question.get("id")
        if not isinstance(qid, str) or not 1 <= len(qid) <= 100:
            raise ValueError(f"question ids are strings of 1 to 100 characters{_at(here + '.id')}")
        if qid in seen:
            raise ValueError(f"question id {qid!r} is used twice{_at(here + '.id')}")
        seen.add(qid)
        for field in ("type", "text"):
            value = question.get(field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Expected a non-empty `str`{_at(f'{here}.{field}')}")
        options = question.get("options")
        if options is not None and (
            not isinstance(options, list) or not options
            or not all(isinstance(o, str | int | float) and not isinstance(o, bool) for o in options)
        ):
            raise ValueError(f"options are a non-empty list of strings or numbers{_at(here + '.options')}")
        required = question.get("required")
        if required is not None and not isinstance(required, bool):
            raise ValueError(f"Expected `bool`{_at(here + '.required')}")


def check_targeting(targeting: dict[str, Any], at: str = "targeting") -> None:
    """`{showOnce?, showAfterSeconds?, showOnPages?, …}`; keys this cell does not evaluate are kept as sent."""
    show_once = targeting.get("showOnce")
    if show_once is not None and not isinstance(show_once, bool):
        raise ValueError(f"Expected `bool`{_at(at + '.showOnce')}")
    after = targeting.get("showAfterSeconds")
    if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
        raise ValueError(f"Expected a non-negative `int`{_at(at + '.showAfterSeconds')}")
    pages = targeting.get("showOnPages")
    if pages is not None:
        if not isinstance(pages, list) or len(pages) > 100:
            raise ValueError(f"Expected a list of at most 100 URL patterns{_at(at + '.showOnPages')}")
        for i, pattern in enumerate(pages):
            if not isinstance(pattern, str) or not 1 <= len(pattern) <= 2048:
                raise ValueError(f"URL patterns are strings of 1 to 2048 characters{_at(f'{at}.showOnPages[{i}]')}")


def check_name(name: str | None) -> None:
    """Names fit the column."""
    if name is not None and not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"name is 1 to {MAX_NAME} characters{_at('name')}")


class SurveyIn(msgspec.Struct, kw_only=True):
    """`POST …/surveys`; `name` defaults to the definition's title."""

    definition: dict[str, Any]
    name: str | None = None
    targeting: dict[str, Any] = msgspec.field(default_factory=dict)
    active: bool = True

    def __post_init__(self) -> None:
        check_name(self.name)
        check_definition(self.definition)
        check_targeting(self.targeting)


class SurveyPatch(msgspec.Struct, kw_only=True):
    """`PATCH …/surveys/{id}`: absent fields are left alone."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    definition: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    targeting: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.name, msgspec.UnsetType):
            check_name(self.name)
        if not isinstance(self.definition, msgspec.UnsetType):
            check_definition(self.definition)
        if not isinstance(self.targeting, msgspec.UnsetType):
            check_targeting(self.targeting)


class Survey(msgspec.Struct, kw_only=True):
    """A survey as the management API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    definition: dict[str, Any]
    targeting: dict[str, Any]
    active: bool
    response_count: int
    created_at: datetime
    updated_at: datetime


class SurveyToShow(msgspec.Struct, kw_only=True):
    """A survey as the SDK receives it: what to render, and the targeting it was chosen by."""

    id: uuid.UUID
    name: str
    definition: dict[str, Any]
    targeting: dict[str, Any]


class SurveysToShow(msgspec.Struct, kw_only=True):
    """`GET /v1/ingest/surveys`: the contract's page of surveys to show now, and (an extension) when to ask
    again: the seconds until the next survey this page would show becomes due by its `showAfterSeconds`, or
    null when waiting would change nothing. The SDK asks once at start, and again then."""

    data: list[SurveyToShow]
    next_cursor: str | None = None
    check_again_in: int | None = None


class ResponseIn(msgspec.Struct, kw_only=True):
    """`POST /v1/ingest/surveys/{id}/responses`.

    `responses` maps question ids to answers; a list of `{question_id, value}` is accepted too.
    """

    session_id: uuid.UUID
    responses: dict[str, Any] | list[dict[str, Any]]
    user: EndUserIn | None = None
    id: uuid.UUID | None = None
    source: Source = "widget"


class SurveyResponse(msgspec.Struct, kw_only=True):
    """One stored response, with the interaction that carries it."""

    id: uuid.UUID
    survey_id: uuid.UUID
    interaction_id: uuid.UUID | None
    session_id: uuid.UUID | None
    user_id: uuid.UUID | None
    responses: dict[str, Any]
    created_at: datetime
