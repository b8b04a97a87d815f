"""The portal's German: every English sentence of the page (template) and of its script has
a translation, with the same placeholders, and the catalogue holds nothing else; the PDF
statement's labels likewise; and every error sentence the API answers, found at its raise
site, likewise. (The page rendered in German, with no English left on it, is
shown in tests/test_portal_browser.py.)"""

from __future__ import annotations

import ast
import json
import re
import string

from pilotchain.operator_input import InvalidInput, parse_participant
from pilotchain.settings import PROJECT_ROOT
from portal.statement import LABELS
from portal.web.http import STATUS
from portal.web.i18n import GERMAN, GERMAN_ERRORS, say

WEB = PROJECT_ROOT / "portal" / "web"
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def template_sentences() -> set[str]:
    text = (WEB / "templates" / "portal.html").read_text()
    return set(re.findall(r'_\("((?:[^"\\]|\\.)*)"\)', text))


def script_sentences() -> set[str]:
    text = (WEB / "static" / "portal.js").read_text()
    found = set(re.findall(r'(?<![\w.])t_?\("((?:[^"\\]|\\.)*)"', text))
    (dynamic,) = re.findall(r"^const DYNAMIC = (\[.*\]);$", text, flags=re.MULTILINE)
    return found | set(json.loads(dynamic))


def test_every_sentence_of_the_page_has_its_german_and_nothing_else_is_kept() -> None:
    used = template_sentences() | script_sentences()
    assert len(used) > 150
    assert sorted(used - set(GERMAN)) == []
    assert sorted(set(GERMAN) - used) == []


def test_each_translation_keeps_the_placeholders_of_its_sentence() -> None:
    wrong = {english: german for english, german in GERMAN.items()
             if sorted(PLACEHOLDER.findall(english)) != sorted(PLACEHOLDER.findall(german))}
    assert wrong == {}


def test_the_statements_labels_are_the_same_in_both_languages() -> None:
    assert set(LABELS["de"]) == set(LABELS["en"])
    for key, english in LABELS["en"].items():
        assert sorted(PLACEHOLDER.findall(LABELS["de"][key])) == \
            sorted(PLACEHOLDER.findall(english)), key


# --- the API's error sentences ------------------------------------------------------------

# Where the errors the portal answers are raised: the portal itself, the operator's form
# parsers it shares with the command line, and the operator commands' contract refusals and
# transaction names (pilotchain/operator.py: there only its Phrases and its errors raised with
# values are the portal's; its other sentences are the command line's).
ERROR_SOURCES = (*sorted((PROJECT_ROOT / "portal").rglob("*.py")),
                 PROJECT_ROOT / "pilotchain" / "operator_input.py")
PHRASES_ONLY = (PROJECT_ROOT / "pilotchain" / "operator.py",)


def answered_errors() -> set[str]:
    """The names of the exceptions the portal answers with their sentence: every kind in
    http.STATUS and the parsers' InvalidInput, with their subclasses."""
    kinds: list[type[Exception]] = [kind for kind, _ in STATUS] + [InvalidInput]
    found: set[str] = set()
    while kinds:
        kind = kinds.pop()
        found.add(kind.__name__)
        kinds += kind.__subclasses__()
    return found


def call_name(node: ast.Call) -> str:
    """The name a call calls: ``BadRequest(...)``, ``self._read(...)``."""
    func = node.func
    return func.id if isinstance(func, ast.Name) else \
        func.attr if isinstance(func, ast.Attribute) else ""


def fields(template: str) -> list[tuple[str, str | None, str]]:
    """The placeholders of a template: name, conversion (``!r``) and format spec."""
    return sorted((name, conversion, spec or "") for _, name, spec, conversion
                  in string.Formatter().parse(template) if name is not None)


def constants(tree: ast.Module) -> dict[str, str]:
    """A module's top-level string constants (``STALE = ("..." "...")``)."""
    return {target.id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def error_templates() -> tuple[set[str], list[str]]:
    """Every English template the API can answer, found at its raise site, and what is
    wrong at raise sites: a sentence that is no literal template (an f-string, a
    concatenation), or values that do not match the template's placeholders."""
    errors = answered_errors()
    found: set[str] = set()
    wrong: list[str] = []
    for path in (*ERROR_SOURCES, *PHRASES_ONLY):
        tree = ast.parse(path.read_text(), filename=str(path))
        named = constants(tree)
        makers = {"Phrase", "_bad", "sentence_json"} | errors
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or call_name(node) not in makers | {
                    "OperatorError"}:
                continue
            if path in PHRASES_ONLY and call_name(node) != "Phrase" and not node.keywords:
                continue  # a sentence of the command line's own
            where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Attribute) and first.attr == "phrase":
                continue  # another error's sentence, passed on: found where it is raised
            if isinstance(first, ast.Name) and first.id in named:
                template = named[first.id]
            elif isinstance(first, ast.Constant) and isinstance(first.value, str):
                template = first.value
            elif isinstance(first, ast.Call) and call_name(first) == "Phrase":
                continue  # found as a Phrase of its own
            elif isinstance(first, ast.Name) and any(k.arg is None for k in node.keywords):
                continue  # a helper's template and values passed on: found at its callers
            else:
                wrong.append(f"{where}: the sentence is no literal template")
                continue
            values = sorted(k.arg for k in node.keywords if k.arg not in (None, "retry_after"))
            if values != sorted({name for name, _, _ in fields(template)}):
                wrong.append(f"{where}: values {values} for {template!r}")
            found.add(template)
    return found, wrong


def test_every_error_sentence_the_api_answers_has_its_german_and_nothing_else_is_kept(
        ) -> None:
    found, wrong = error_templates()
    assert wrong == []
    assert len(found) > 80
    assert sorted(found - set(GERMAN_ERRORS)) == []
    assert sorted(set(GERMAN_ERRORS) - found) == []


def test_each_error_translation_keeps_the_placeholders_of_its_sentence() -> None:
    wrong = {english: german for english, german in GERMAN_ERRORS.items()
             if fields(english) != fields(german)}
    assert wrong == {}
    # The page's catalogue and the API's share one translate(): a text in both means the same.
    assert {text: GERMAN[text] for text in set(GERMAN) & set(GERMAN_ERRORS)} == \
        {text: GERMAN_ERRORS[text] for text in set(GERMAN) & set(GERMAN_ERRORS)}


def test_an_error_is_the_english_sentence_and_answers_in_german_with_its_values() -> None:
    """str() stays English (logs, the command line); say() renders the same error in German,
    the words of ours among its values translated, the user's input as it was typed."""
    try:
        parse_participant("not-an-id")
    except InvalidInput as error:
        refused = error
    assert str(refused) == "The participant 'not-an-id' is neither a uuid nor 0x and 64 " \
        "hex digits."
    assert say("en", refused.phrase) == str(refused)
    assert say("de", refused.phrase) == GERMAN_ERRORS[
        "The {what} {text!r} is neither a uuid nor 0x and 64 hex digits."].format(
        what="Teilnehmer", text="not-an-id")
    assert "participant" not in say("de", refused.phrase)
