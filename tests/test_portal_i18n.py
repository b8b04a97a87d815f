"""The portal's German: every English sentence of the page (template) and of its script has
a translation, with the same placeholders, and the catalogue holds nothing else; the PDF
statement's labels likewise. (The page rendered in German, with no English left on it, is
shown in tests/test_portal_browser.py.)"""

from __future__ import annotations

import json
import re

from pilotchain.settings import PROJECT_ROOT
from portal.statement import LABELS
from portal.web.i18n import GERMAN

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
