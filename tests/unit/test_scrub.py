"""Server-side redaction: every built-in pattern, custom regex validation, JSON walking and reports."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from cell.privacy.scrub import (
    SCOPES,
    Budget,
    PatternError,
    Report,
    Rules,
    check_pattern,
    compile_rules,
    luhn,
    scrub_message,
    scrub_text,
    scrub_value,
    sensitive_key,
)
from common.problems import Problem


def rules(*patterns: str, scope: list[str] | None = None, name: str | None = None) -> Rules:
    return compile_rules([
        {"id": f"r{i}", "name": name or (p if not p.startswith("regex:") else "custom"), "enabled": True,
         "rule": {"type": "pattern", "pattern": p, "scope": scope or list(SCOPES)}}
        for i, p in enumerate(patterns)
    ])


def scrub(pattern: str, text: str) -> str:
    return scrub_text(rules(pattern), text, "content")


# -- email ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("mail bob@example.com now", "mail [redacted:email] now"),
    ("end of sentence: a.b+tag@mail.example.co.uk.", "end of sentence: [redacted:email]."),
    ("<Jane.Doe_1@sub-domain.example.org>", "<[redacted:email]>"),
    ("two: x@y.io, z@w.dev", "two: [redacted:email], [redacted:email]"),
])
def test_email_redacts_addresses(text: str, expected: str) -> None:
    assert scrub("email", text) == expected


@pytest.mark.parametrize("text", [
    "no at sign here", "user@localhost", "@handle on social", "a @ b . com", "price 5@3", "foo@bar.c",
])
def test_email_leaves_what_is_not_an_address(text: str) -> None:
    assert scrub("email", text) == text


# -- card ----------------------------------------------------------------------------------------------------

def test_luhn() -> None:
    assert luhn("4111111111111111") and luhn("79927398713") and luhn("378282246310005")
    assert not luhn("4111111111111112") and not luhn("79927398710")


@pytest.mark.parametrize("text, expected", [
    ("card 4111111111111111 ok", "card [redacted:card] ok"),
    ("card 4111 1111 1111 1111.", "card [redacted:card]."),
    ("amex 3782-822463-10005", "amex [redacted:card]"),
    ("mc 5555555555554444, visa 4242424242424242", "mc [redacted:card], visa [redacted:card]"),
    ("19 digits 6799 9901 0000 0000 019", "19 digits [redacted:card]"),
    ("card then digit 6011 0009 9013 9424 3", "card then digit [redacted:card] 3"),
    ("order 12 4111 1111 1111 1111", "order 12 [redacted:card]"),
    ("diners 30569309025904", "diners [redacted:card]"),
])
def test_card_redacts_luhn_valid_numbers(text: str, expected: str) -> None:
    assert scrub("card", text) == expected


@pytest.mark.parametrize("text", [
    "4111111111111112",            # fails Luhn
    "411111111111",                # 12 digits: too short
    "41111111111111111111111",     # 23 digits, one number: an id, not a card
    "0000000000000000",            # passes Luhn but is padding
    "phone +1 555-123-4567",
    "date 2024-01-15 12:30:45",
    "4111--1111--1111--1111",      # double separators break the run
])
def test_card_leaves_other_numbers(text: str) -> None:
    assert scrub("card", text) == text


# -- bearer --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Authorization: Bearer abc.DEF-123_xyz~+/=", "Authorization: Bearer [redacted:bearer]"),
    ("authorization: bearer  sk-proj-abcdefgh", "authorization: bearer  [redacted:bearer]"),
    ("key rk_us_ab12cd_AbCdEfGhIjKlMnOpQrStUvWxYz012345 used",
     "key [redacted:bearer] used"),
    ("session rs_Zx9kQ2mN8pL4vB7cX1tY", "session [redacted:bearer]"),
    ("jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
     "jwt=[redacted:bearer] end"),
    ("gh token ghp_16C7e42F292c6912E7710c838347Ae178B4a", "gh token [redacted:bearer]"),
])
def test_bearer_redacts_tokens(text: str, expected: str) -> None:
    assert scrub("bearer", text) == expected


@pytest.mark.parametrize("text", [
    "the bearer of bad news", "Bearer ", "user_preferences_table", "sk_learn_model_name", "eyJ alone",
    "risk_assessment_value",
])
def test_bearer_leaves_ordinary_text(text: str) -> None:
    assert scrub("bearer", text) == text


# -- credentials ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("https://x.io/login?user=bob&password=hunter2&next=/", "https://x.io/login?user=bob&password=[redacted:credentials]&next=/"),
    ("GET /cb?access_token=abc123&state=1", "GET /cb?access_token=[redacted:credentials]&state=1"),
    ('{"password": "hunter2", "apiKey":"k-1", "name": "bob"}',
     '{"password": "[redacted:credentials]", "apiKey":"[redacted:credentials]", "name": "bob"}'),
    ('{\\"client_secret\\":\\"s3cr3t\\"}', '{\\"client_secret\\":\\"[redacted:credentials]\\"}'),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: [redacted:credentials]"),
    ("X-Api-Key: 0123456789abcdef", "X-Api-Key: [redacted:credentials]"),
    ("Cookie: sid=abc; theme=dark", "Cookie: [redacted:credentials]"),
    ("db postgres://app:pa55w0rd@db.internal/app", "db postgres://app:[redacted:credentials]@db.internal/app"),
    ("secret='x y z' rest", "secret='[redacted:credentials]' rest"),
    ("PASSWORD_CONFIRMATION=hunter2", "PASSWORD_CONFIRMATION=[redacted:credentials]"),
])
def test_credentials_redact_values_not_keys(text: str, expected: str) -> None:
    assert scrub("credentials", text) == expected


@pytest.mark.parametrize("text", [
    "tokenizer=bert author=me passenger=3", "forgot my password", "keyboard layout: us", "token:", "?user=bob&x=1",
])
def test_credentials_leave_ordinary_text(text: str) -> None:
    assert scrub("credentials", text) == text


@pytest.mark.parametrize("key, sensitive", [
    ("password", True), ("Authorization", True), ("X-Api-Key", True), ("accessToken", True), ("Set-Cookie", True),
    ("client_secret", True), ("password_confirmation", True), ("cvv", True),
    ("token_type", False), ("session_id", False), ("author", False), ("oauth", False), ("keyboard", False),
    ("url", False), ("tokens", False),
])
def test_sensitive_keys(key: str, sensitive: bool) -> None:
    assert sensitive_key(key) is sensitive


# -- ip ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("from 203.0.113.9 at noon", "from [redacted:ip] at noon"),
    ("host=10.0.0.1.", "host=[redacted:ip]."),
    ("v6 2001:db8::8a2e:370:7334 ok", "v6 [redacted:ip] ok"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full [redacted:ip]"),
])
def test_ip_redacts_addresses(text: str, expected: str) -> None:
    assert scrub("ip", text) == expected


@pytest.mark.parametrize("text", ["999.1.1.1", "1.2.3", "Foo::bar()", "at 12:30:45", "1.2.3.4.5"])
def test_ip_leaves_what_is_not_an_address(text: str) -> None:
    assert scrub("ip", text) == text


# -- custom regexes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", [
    r"regex:\b\d{3}-\d{2}-\d{4}\b", r"regex:(?:\d{3}-)+\d{4}", r"regex:(?i)internal-[a-z0-9]+",
    r"regex:(?:foo|bar)+baz", r"regex:ssn=(?P<secret>\d+)", "regex:" + "a" * 500,
    # Shapes that backtrack catastrophically elsewhere run in linear time on RE2: nothing to refuse.
    "regex:(a+)+$", r"regex:(\w+\s?)*x", "regex:(a|ab)*c", r"regex:\w*\w*\w*\w*x",
])
def test_custom_regex_accepted(pattern: str) -> None:
    assert check_pattern(pattern) is not None


@pytest.mark.parametrize("pattern, why", [
    (r"regex:(a)\1", "backreferences"),
    (r"regex:(?P<x>a)(?P=x)", "cannot run on RE2"),
    (r"regex:(?<=user=)\w+", "look-ahead and look-behind"),
    (r"regex:(?<!x)y", "look-ahead and look-behind"),
    (r"regex:secret(?=:)", "look-ahead and look-behind"),
    (r"regex:a(?!b)", "look-ahead and look-behind"),
    ("regex:a++", "cannot run on RE2"),
    ("regex:" + "a" * 501, "1 to 500"),
    ("regex:", "1 to 500"),
    ("regex:(unclosed", "cannot run on RE2"),
    ("regex:a*", "empty string"),
    ("regex:(?:)", "empty string"),
    ("phone", "one of email"),
    ("EMAIL", "one of email"),
])
def test_custom_regex_refused(pattern: str, why: str) -> None:
    with pytest.raises(PatternError, match=why):
        check_pattern(pattern)


def test_pathological_custom_regex_runs_in_linear_time() -> None:
    r"""`\w*\w*\w*\w*x` over text without an x backtracks for hours on a backtracking engine; RE2 scans once.
    Judged by how the time grows with the text (×16 text, well under ×16² time), not by seconds."""
    r = rules(r"regex:\w*\w*\w*\w*x", name="x")
    timings = []
    for n in (64 * 1024, 1024 * 1024):
        text = "a" * n
        started = time.perf_counter()
        assert scrub_text(r, text, "content") == text
        timings.append(time.perf_counter() - started)
    assert timings[1] < timings[0] * 16 * 8 + 0.05, timings


def test_the_budget_refuses_too_much_custom_scanning() -> None:
    r = rules(r"regex:\bEMP-\d{6}\b", name="emp")
    report = Report(Budget(seconds=30, custom_chars=10_000))
    scrub_text(r, "x" * 9_000, "content", report)
    with pytest.raises(Problem) as raised:
        scrub_text(r, "x" * 2_000, "content", report)
    assert raised.value.status == 413
    late = Report(Budget(seconds=0.0))
    with pytest.raises(Problem) as raised:
        scrub_value(r, {"a": "text"}, "content", late)
    assert raised.value.status == 503 and raised.value.headers.get("Retry-After")


def test_builtin_names_need_no_regex() -> None:
    assert all(check_pattern(name) is None for name in ("email", "card", "bearer", "credentials", "ip"))


def test_custom_regex_redacts_whole_match_or_its_secret_group() -> None:
    assert scrub(r"regex:\bEMP-\d{6}\b", "employee EMP-123456 here") == "employee [redacted:custom] here"
    assert scrub(r"regex:ssn=(?P<secret>\d+)", "ssn=123456789&x=1") == "ssn=[redacted:custom]&x=1"


# -- walking JSON, scopes, reports ---------------------------------------------------------------------------

def test_scrub_value_walks_every_string_and_leaves_the_input_alone() -> None:
    r = rules("credentials", "card", "bearer", "email")
    value: dict[str, Any] = {
        "text": "I am bob@example.com",
        "nested": [{"deep": ["card 4111 1111 1111 1111"]}, 7, None, True],
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "application/json"},
        "har": [{"name": "Cookie", "value": "sid=1"}, {"name": "Accept", "value": "text/html"}],
        "pairs": [["X-Api-Key", "k-123"]],
        "form": {"password": {"old": "a1", "new": "b2"}, "pin_code": 1234, "cvv": 123},
        "carol@example.com": "a key that is an address",
    }
    before = copy.deepcopy(value)
    report = Report()
    out = scrub_value(r, value, "logs", report)
    assert value == before
    assert out == {
        "text": "I am [redacted:email]",
        "nested": [{"deep": ["card [redacted:card]"]}, 7, None, True],
        "headers": {"Authorization": "[redacted:credentials]", "Accept": "application/json"},
        "har": [{"name": "Cookie", "value": "[redacted:credentials]"}, {"name": "Accept", "value": "text/html"}],
        "pairs": [["X-Api-Key", "[redacted:credentials]"]],
        "form": {"password": {"old": "[redacted:credentials]", "new": "[redacted:credentials]"}, "pin_code": 1234,
                 "cvv": "[redacted:credentials]"},
        "[redacted:email]": "a key that is an address",
    }
    assert report.counts == {"r0": 6, "r1": 1, "r3": 2}
    assert report.as_json() == {
        "redactions": {
            "r3": {"rule": "email", "matches": 2, "scopes": {"logs": 2}},
            "r1": {"rule": "card", "matches": 1, "scopes": {"logs": 1}},
            "r0": {"rule": "credentials", "matches": 6, "scopes": {"logs": 6}},
        },
        "total": 9,
    }


def test_nothing_to_redact_returns_the_value_untouched() -> None:
    r = rules("credentials", "card", "bearer")
    value = {"console": [{"level": "error", "message": "TypeError: x is undefined", "timestamp": 1700000000000}]}
    report = Report()
    assert scrub_value(r, value, "logs", report) == value
    assert not report and report.as_json() == {"redactions": {}, "total": 0}


def test_scopes_limit_where_a_rule_applies() -> None:
    r = rules("email", scope=["logs"])
    assert scrub_text(r, "a@b.io", "logs") == "[redacted:email]"
    for scope in ("content", "context", "messages"):
        assert scrub_text(r, "a@b.io", scope) == "a@b.io"
    report = Report()
    assert scrub_message(rules("card"), "my card is 4242 4242 4242 4242", report) == "my card is [redacted:card]"
    assert report.as_json()["redactions"]["r0"]["scopes"] == {"messages": 1}


def test_report_never_holds_values() -> None:
    report = Report()
    secret = "hunter2-" + "x" * 10
    scrub_text(rules("credentials"), f"password={secret}", "content", report)
    assert secret not in repr(report.as_json()) and report.total == 1


def test_redaction_is_stable_and_markers_are_not_redacted_again() -> None:
    r = rules("credentials", "bearer", "email", "regex:redacted", name=None)
    once = scrub_text(r, "Authorization: Bearer abcdefghijkl and a@b.io", "content")
    assert once == "Authorization: [redacted:credentials] and [redacted:email]"
    assert scrub_text(r, once, "content") == once


def test_compile_rules_skips_disabled_and_collects_selectors() -> None:
    compiled = compile_rules([
        {"id": "1", "name": "cards", "enabled": False, "rule": {"type": "pattern", "pattern": "card"}},
        {"id": "2", "name": "inputs", "enabled": True,
         "rule": {"type": "selector", "selector": "input[type=password]"}},
        {"id": "3", "name": "mask", "enabled": False, "rule": {"type": "selector", "selector": ".secret"}},
        {"id": "4", "name": "mail", "enabled": True, "rule": {"type": "pattern", "pattern": "email"}},
    ])
    assert [r.name for r in compiled.patterns] == ["mail"] and compiled.selectors == ("input[type=password]",)
    assert scrub_text(compiled, "4111111111111111", "content") == "4111111111111111"


@pytest.mark.parametrize("make", [
    lambda n: "a" * n, lambda n: "1" * n, lambda n: "1 " * (n // 2), lambda n: "1234 " * (n // 5),
    lambda n: "token_" * (n // 6), lambda n: 'password:"\\"' * (n // 12), lambda n: "a@" * (n // 2),
    lambda n: "a.b" * (n // 3), lambda n: "Bearer " * (n // 7), lambda n: "a:" * (n // 2),
    lambda n: "eyJaaaaaaaaaa." * (n // 14), lambda n: "rk_" * (n // 3), lambda n: "1.1." * (n // 4),
    lambda n: "password=" * (n // 9), lambda n: "https://" + "a" * n, lambda n: "x@" + "a." * (n // 2),
])
def test_builtins_take_linear_time_on_hostile_input(make: Any) -> None:
    # Quadratic behaviour on 200 KB would take minutes; linear takes well under a second even on a busy machine.
    r = rules("credentials", "card", "bearer", "email", "ip")
    text = make(200_000)
    start = time.perf_counter()
    scrub_text(r, text, "logs")
    assert time.perf_counter() - start < 10


def test_deep_nesting_costs_no_recursion() -> None:
    r = rules("email")
    value: Any = "a@b.io"
    for i in range(900):
        value = [value] if i % 2 else {"k": value}
    out = scrub_value(r, value, "content")
    for i in reversed(range(900)):
        out = out[0] if i % 2 else out["k"]
    assert out == "[redacted:email]"


# -- where end users' traits are scrubbed --------------------------------------------------------------------

async def test_large_traits_are_scrubbed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traits can be most of a body: from OFFLOAD_BYTES on they are scrubbed on a worker thread (a tenant's
    custom rules over them never hold up the cell's loop), smaller ones inline; both redacted the same."""
    import threading

    from cell import users
    from cell.privacy import scrub as module

    threads: list[int] = []
    real = module.scrub_value

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "scrub_value", recording)
    custom = rules(r"regex:\w*\w*\w*\w*x")
    loop_thread = threading.get_ident()
    big = {"bio": ("a" * 998 + "x ") * (module.OFFLOAD_BYTES // 1000 + 1)}
    traits, report = await users._scrubbed_traits(custom, users.EndUserIn(external_id="u", traits=big))
    assert threads and threads[-1] != loop_thread
    assert traits is not None and "x " not in traits["bio"] and report is not None and report["total"] > 30
    traits, report = await users._scrubbed_traits(custom, users.EndUserIn(external_id="u", traits={"a": "ax"}))
    assert threads[-1] == loop_thread and traits == {"a": "[redacted:custom]"}
