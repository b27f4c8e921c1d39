"""Answers checked against the survey they answer, and rendered as the user's words.

A response is only useful if every answer belongs to a question of the survey and
fits it (an option of a choice, a number on a scale), so a bad widget is told at
once with a pointer to the answer, instead of leaving unreadable rows behind.
"""

from __future__ import annotations

from typing import Any

from common.problems import FieldError, Problem

NUMERIC = frozenset({"rating", "nps", "scale", "number", "csat", "ces", "slider", "opinion"})
BOOLEAN = frozenset({"boolean", "yes_no", "yesno"})
TEXT = frozenset({"text", "open", "open_text", "textarea", "short_text", "long_text", "email"})
MAX_ANSWER = 10_000


def _pointer(*parts: str | int) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _multiple(question: dict[str, Any]) -> bool:
    kind = str(question["type"]).lower()
    return "multi" in kind or "checkbox" in kind


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _problem(question: dict[str, Any], answer: Any) -> str | None:
    """What is wrong with one answer to one question, or None."""
    if isinstance(answer, str) and len(answer) > MAX_ANSWER:
        return f"answers are at most {MAX_ANSWER} characters"
    options = question.get("options")
    kind = str(question["type"]).lower()
    if options is not None:
        if isinstance(answer, list):
            if not _multiple(question):
                return "this question takes one option"
            if not answer or len(set(map(str, answer))) != len(answer):
                return "choose one or more distinct options"
            values = answer
        else:
            values = [answer]
        bad = [v for v in values if isinstance(v, bool) or not _is_scalar(v) or v not in options]
        return f"not an option of this question: {bad[0]!r}"[:200] if bad else None
    if kind in NUMERIC:
        if not _is_number(answer):
            return "this question takes a number"
        low, high = (0, 10) if kind == "nps" else (question.get("min"), question.get("max"))
        if _is_number(low) and answer < low:
            return f"the answer must be at least {low}"
        if _is_number(high) and answer > high:
            return f"the answer must be at most {high}"
        return None
    if kind in BOOLEAN:
        return None if isinstance(answer, bool) else "this question takes true or false"
    if kind in TEXT:
        return None if isinstance(answer, str) else "this question takes text"
    if _is_scalar(answer) or (isinstance(answer, list) and all(_is_scalar(v) for v in answer)):
        return None
    return "answers are text, numbers, booleans or lists of them"


def _by_question(responses: dict[str, Any] | list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str],
                                                                            list[FieldError]]:
    """Answers keyed by question id, each with the pointer to where it was sent."""
    if isinstance(responses, dict):
        return dict(responses), {q: _pointer("responses", q) for q in responses}, []
    answers: dict[str, Any] = {}
    pointers: dict[str, str] = {}
    errors: list[FieldError] = []
    for i, item in enumerate(responses):
        qid = item.get("question_id", item.get("questionId", item.get("id")))
        if not isinstance(qid, str):
            errors.append(FieldError(_pointer("responses", i), "each answer names its question_id"))
            continue
        if qid in answers:
            errors.append(FieldError(_pointer("responses", i), "this question is answered twice"))
            continue
        answers[qid] = item.get("value", item.get("answer"))
        pointers[qid] = _pointer("responses", i)
    return answers, pointers, errors


def check(definition: dict[str, Any], responses: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """The answers keyed by question id (unanswered ones dropped), or a 422 naming each bad answer."""
    questions = {q["id"]: q for q in definition.get("questions", []) if isinstance(q, dict) and "id" in q}
    answers, pointers, errors = _by_question(responses)
    for qid, answer in answers.items():
        question = questions.get(qid)
        if question is None:
            errors.append(FieldError(pointers[qid], "no question of this survey has this id"))
        elif answer is not None and (wrong := _problem(question, answer)) is not None:
            errors.append(FieldError(pointers[qid], wrong))
    for qid, question in questions.items():
        if question.get("required") and answers.get(qid) is None:
            errors.append(FieldError(_pointer("responses", qid), "this question needs an answer"))
    kept = {qid: answer for qid, answer in answers.items() if answer is not None}
    if not errors and not kept:
        errors.append(FieldError("/responses", "answer at least one question"))
    if errors:
        raise Problem(422, "the responses do not fit this survey", errors=errors)
    return kept


def as_text(definition: dict[str, Any], answers: dict[str, Any]) -> str:
    """The answers as searchable text, one `question: answer` line each, in the survey's order."""
    lines = []
    for question in definition.get("questions", []):
        if isinstance(question, dict) and question.get("id") in answers:
            answer = answers[question["id"]]
            shown = ", ".join(map(str, answer)) if isinstance(answer, list) else str(answer)
            lines.append(f"{question.get('text', question['id'])}: {shown}")
    return "\n".join(lines)
