"""The PDF statement's lettering: names in the scripts of Europe print as written with the
fonts (DejaVu Sans, embedded), and as Latin-1 with ``?`` for the rest without them."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from pypdf import PdfReader

from portal.statement import StatementDocument, has_fonts, render
from portal.web.config import WebSettings

FONTS = WebSettings().pdf_fonts
NAMES = ("Łódź Zakład Energii", "Ενεργειακή Κοινότητα", "Энергосообщество", "Güneş Enerjisi",
         "Ärztehaus Süd")


def statement(name: str, counterparties: tuple[str, ...]) -> StatementDocument:
    """Period 1 of participant ``name``, who bought once from each of ``counterparties``."""
    me, market = str(uuid.uuid4()), str(uuid.uuid4())
    others = {str(uuid.uuid4()): other for other in counterparties}
    amounts = dict.fromkeys(("energy_sold", "energy_bought", "money_receivable",
                             "money_payable", "balancing_charges", "balancing_credits", "net"),
                            0)
    return StatementDocument(
        network="PilotChain", contract="0x" + "ab" * 20, chain_id=8765, participant=me,
        name=name, period=1, start_slot=None,
        statement={**amounts, "period": 1, "end_slot": 1_800_000_000, "paid": False},
        close_tx="0x" + "cd" * 32, close_block=7,
        trades=[{"seller": other, "buyer": me, "market": market, "time_slot": 1_799_999_100,
                 "energy": 10**16, "price": 3 * 10**17} for other in others],
        names={me: name, market: "Grid", **others}, balancing=[])


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_names_in_any_european_script_print_as_written() -> None:
    if not has_fonts(FONTS):
        pytest.fail(f"DejaVu Sans is not in {FONTS}; ./scripts/test installs fonts-dejavu-core")
    for lang, (name, *others) in (("en", NAMES), ("de", NAMES[::-1])):
        text = text_of(render(statement(name, tuple(others)), lang, FONTS))
        assert f": {name}" in text, (name, text[:300])
        for other in others:
            assert other in text, (other, text)


def test_without_the_fonts_latin1_prints_and_the_rest_is_a_question_mark(
        tmp_path: Path) -> None:
    assert not has_fonts(tmp_path)
    text = text_of(render(statement("Ärztehaus Süd", ("Łódź",)), "de", tmp_path))
    assert ": Ärztehaus Süd" in text and "?ód?" in text
