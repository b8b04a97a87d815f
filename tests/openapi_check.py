"""Helpers of the OpenAPI tests (imported by test modules, not a fixture plug-in): the routes
a Flask app serves and those a description names, in one notation; a check that no answer
shows a traceback; and the tally of generated cases per operation, reported at the end."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from schemathesis import CheckContext, Response
from schemathesis.generation.case import Case

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Flask writes <converter:name>, OpenAPI {name}.
_RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def served(app: Flask) -> set[tuple[str, str]]:
    """(path, method) of every route ``app`` serves, in OpenAPI's notation (HEAD and
    OPTIONS, which werkzeug adds to every route, left out)."""
    found = set()
    for rule in app.url_map.iter_rules():
        path = _RULE_VARIABLE.sub(r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            found.add((path, method.lower()))
    return found


def described(description: dict[str, Any]) -> set[tuple[str, str]]:
    """(path, method) of every operation ``description`` names."""
    return {(path, method) for path, operations in description["paths"].items()
            for method in operations if method in HTTP_METHODS}


def no_traceback(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A Schemathesis check: nothing in the answer looks like a Python traceback or names an
    exception class, whatever the status."""
    del ctx, case
    # A binary answer (the portal's PDF statements) is searched as text too, undecodable
    # bytes replaced.
    text = (response.content or b"").decode("utf-8", "replace")
    found = TRACEBACK.search(text)
    if found:
        raise AssertionError(f"the answer shows a traceback ({found.group(0)!r}): "
                             f"{text[:300]!r}")
    return None


TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]+\.py", line \d+')


class Tally:
    """Generated cases per operation, and the requests sent for them."""

    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = {}
        self.posts = 0  # a counter for tests that alternate how they send

    def add(self, case: Case, statuses: list[int]) -> None:
        label = case.operation.label
        self.cases[label] += 1
        self.requests[label] += len(statuses)
        self.statuses.setdefault(label, Counter()).update(statuses)

    def lines(self, title: str) -> list[str]:
        width = max((len(label) for label in self.cases), default=10)
        out = [f"{title}: {sum(self.cases.values())} generated cases, "
               f"{sum(self.requests.values())} requests",
               f"  {'operation':<{width}}  cases  requests  statuses"]
        for label in sorted(self.cases):
            statuses = " ".join(f"{status}x{count}" for status, count
                                in sorted(self.statuses[label].items()))
            out.append(f"  {label:<{width}}  {self.cases[label]:>5}  "
                       f"{self.requests[label]:>8}  {statuses}")
        return out


def report(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print ``lines`` on the terminal, past pytest's output capture (the tally is the
    point of the run, not a debugging aid)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
