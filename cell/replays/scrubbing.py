"""Replay events through the project's privacy rules before a byte of them is stored.

The SDK masks inputs and the project's selectors in the browser, but a replay
still carries whatever the page showed: text nodes, attribute values, input
values that slipped past masking, console lines of plugins. Every string of
every event goes through the pattern rules of scope `content` (see
`cell.privacy.scrub.scrub_value`; credential-like keys are redacted whole).

On top of the patterns, rrweb's structure says which elements hold secrets
whatever their value looks like: a password field, a card field
(`autocomplete="cc-…"`), an input named like a credential. Their values are
redacted whole wherever they appear in the chunk: the `value` attribute in a
full snapshot or an added node, an attribute mutation, and the input events
typed into them (by node id). That takes the rule with key matching
(`credentials`), so a project that disabled it keeps its values.
"""

from __future__ import annotations

from typing import Any

from cell.privacy import scrub

SCOPE = "content"
"""Replays are what the page showed and what the person typed: the scope of the user's own words."""

# rrweb's numbering (rrweb/packages/types): event types, incremental sources, serialized node types.
FULL_SNAPSHOT, INCREMENTAL_SNAPSHOT = 2, 3
MUTATION, INPUT = 0, 5
ELEMENT = 2
FORM_FIELDS = frozenset({"input", "textarea", "select"})
SECRET_AUTOCOMPLETE = frozenset({"current-password", "new-password", "one-time-code"})


def secret_field(node: dict[str, Any]) -> bool:
    """Whether a serialized element is a form field whose value is a secret by what it is, not by its value."""
    if node.get("type") != ELEMENT or str(node.get("tagName", "")).lower() not in FORM_FIELDS:
        return False
    attributes = node.get("attributes")
    if not isinstance(attributes, dict):
        return False
    kind = str(attributes.get("type", "")).lower()
    autocomplete = str(attributes.get("autocomplete", "")).lower()
    names = (attributes.get("name"), attributes.get("id"))
    return (kind == "password" or autocomplete.startswith("cc-") or autocomplete in SECRET_AUTOCOMPLETE
            or any(isinstance(n, str) and scrub.sensitive_key(n) for n in names))


class _Secrets:
    """The chunk's secret fields by node id, and the redaction of their values."""

    def __init__(self, rule: scrub.Rule, report: scrub.Report | None) -> None:
        self.rule = rule
        self.report = report
        self.ids: set[int] = set()

    def redact(self, holder: dict[str, Any], field: str) -> None:
        """Replace `holder[field]` by the rule's marker, unless empty, already redacted or masked by rrweb."""
        value = holder.get(field)
        if not isinstance(value, str) or not value.strip("*") or value == self.rule.marker:
            return
        holder[field] = self.rule.marker
        if self.report is not None:
            self.report.add(self.rule, SCOPE, 1)

    def visit(self, root: Any) -> None:
        """Walk a serialized node tree (no recursion: pages nest deeply), noting and redacting secret fields."""
        stack = [root]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict):
                continue
            if secret_field(node):
                if isinstance(node.get("id"), int):
                    self.ids.add(node["id"])
                self.redact(node["attributes"], "value")
            children = node.get("childNodes")
            if isinstance(children, list):
                stack.extend(children)

    def event(self, event: dict[str, Any]) -> None:
        """Note and redact what one event says about secret fields (in place: the events are ours)."""
        data = event.get("data")
        if not isinstance(data, dict):
            return
        if event.get("type") == FULL_SNAPSHOT:
            self.visit(data.get("node"))
        elif event.get("type") == INCREMENTAL_SNAPSHOT:
            source = data.get("source")
            if source == MUTATION:
                for add in data.get("adds") or ():
                    if isinstance(add, dict):
                        self.visit(add.get("node"))
                for change in data.get("attributes") or ():
                    if isinstance(change, dict) and change.get("id") in self.ids \
                            and isinstance(change.get("attributes"), dict):
                        self.redact(change["attributes"], "value")
            elif source == INPUT and data.get("id") in self.ids:
                self.redact(data, "text")


def scrub_events(rules: scrub.Rules, events: list[dict[str, Any]],
                 report: scrub.Report | None = None) -> list[dict[str, Any]]:
    """The chunk's events with secret fields' values and every pattern match redacted; counted in `report`."""
    active = rules.in_scope(SCOPE)
    if not active:
        return events
    keyed = next((rule for rule in active if rule.keys), None)
    if keyed is not None:
        secrets = _Secrets(keyed, report)
        for event in events:
            secrets.event(event)
    cleaned: list[dict[str, Any]] = scrub.scrub_value(rules, events, SCOPE, report)
    return cleaned
