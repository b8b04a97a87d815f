"""A closed billing period's statement as a PDF document that reads like a utility bill.

The amounts are the contract's (``statementOf``, read live by the caller), printed exactly:
the integers' decimal point moved, every digit kept, so the document and the chain never
differ by a rounding; the euro figure beside the net is the only rounded number, and says
so. Then the lines that explain them: the period's trades bought and sold (with the
counterparties' names, as the participant's pages show them), the balancing charges and
credits slot by slot, and the chain reference to check it all against (contract, chain id,
the transaction that closed the period, the call to make).

Drawn with fpdf2 (pure Python) in DejaVu Sans, embedded (the glyphs used only), so a name
in Polish, Greek, Cyrillic or Turkish prints as the operator wrote it; where the fonts are
missing (``PORTAL_PDF_FONTS``), in the built-in Helvetica, whose characters are Latin-1: a
name with others is then printed with ``?`` in their place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

SCALE = 18

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Energy statement", "period": "Billing period {period}",
        "participant": "Participant", "id": "Participant id", "from": "From", "to": "To",
        "start": "the start of the recording", "summary": "Summary",
        "energy_sold": "Energy sold", "energy_bought": "Energy bought",
        "money_receivable": "Receivable for energy sold",
        "money_payable": "Payable for energy bought",
        "balancing_charges": "Balancing charges", "balancing_credits": "Balancing credits",
        "net": "Net", "net_receive": "you receive", "net_owe": "you owe",
        "rounded": "about {euros} EUR, rounded",
        "paid": "Paid", "yes": "yes", "no": "no, not yet",
        "trades": "Trades in this period ({count})", "slot": "Slot (UTC)",
        "market": "Market", "side": "Side", "with": "With", "kwh": "kWh", "ct": "ct",
        "sold": "sold", "bought": "bought", "yourself": "yourself",
        "balancing": "Balancing charges and credits", "none": "None in this period.",
        "shortfall": "{slot}: exported {measured} kWh of {traded} kWh sold, short {dev} kWh "
                     "at {rate} ct/kWh: charge {amount} ct",
        "excess": "{slot}: imported {measured} kWh of {traded} kWh bought, {dev} kWh from "
                  "the grid at {rate} ct/kWh: charge {amount} ct",
        "surplus": "{slot}: exported {measured} kWh of {traded} kWh sold, {dev} kWh to the "
                   "grid at {rate} ct/kWh: credit {amount} ct",
        "verify": "Check it on the chain", "contract": "Settlement contract",
        "chain": "Chain id", "closed_in": "Period closed in transaction",
        "block": "block", "call": "Call statementOf({period}, {pid}) on the contract; it "
                                  "answers these amounts, in kWh and ct times 10^18.",
        "page": "Page {page}",
    },
    "de": {
        "title": "Energieabrechnung", "period": "Abrechnungszeitraum {period}",
        "participant": "Teilnehmer", "id": "Teilnehmer-ID", "from": "Von", "to": "Bis",
        "start": "Beginn der Aufzeichnung", "summary": "Zusammenfassung",
        "energy_sold": "Verkaufte Energie", "energy_bought": "Gekaufte Energie",
        "money_receivable": "Forderung aus verkaufter Energie",
        "money_payable": "Verbindlichkeit aus gekaufter Energie",
        "balancing_charges": "Ausgleichsentgelte", "balancing_credits": "Ausgleichsgutschriften",
        "net": "Saldo", "net_receive": "Sie erhalten", "net_owe": "Sie zahlen",
        "rounded": "etwa {euros} EUR, gerundet",
        "paid": "Bezahlt", "yes": "ja", "no": "nein, noch nicht",
        "trades": "Handel in diesem Zeitraum ({count})", "slot": "Zeitfenster (UTC)",
        "market": "Markt", "side": "Seite", "with": "Mit", "kwh": "kWh", "ct": "ct",
        "sold": "verkauft", "bought": "gekauft", "yourself": "Sie selbst",
        "balancing": "Ausgleichsentgelte und -gutschriften",
        "none": "Keine in diesem Zeitraum.",
        "shortfall": "{slot}: {measured} kWh von {traded} kWh verkauft eingespeist, {dev} kWh "
                     "zu wenig zu {rate} ct/kWh: Entgelt {amount} ct",
        "excess": "{slot}: {measured} kWh bezogen, {traded} kWh gekauft, {dev} kWh aus dem "
                  "Netz zu {rate} ct/kWh: Entgelt {amount} ct",
        "surplus": "{slot}: {measured} kWh eingespeist, {traded} kWh verkauft, {dev} kWh ins "
                   "Netz zu {rate} ct/kWh: Gutschrift {amount} ct",
        "verify": "Auf der Chain nachprüfen", "contract": "Settlement-Vertrag",
        "chain": "Chain-ID", "closed_in": "Zeitraum abgeschlossen in Transaktion",
        "block": "Block", "call": "Rufen Sie statementOf({period}, {pid}) am Vertrag auf; er "
                                  "antwortet diese Beträge, in kWh und ct mal 10^18.",
        "page": "Seite {page}",
    },
}
AMOUNT_LINES = (("energy_sold", "kWh"), ("energy_bought", "kWh"), ("money_receivable", "ct"),
                ("money_payable", "ct"), ("balancing_charges", "ct"),
                ("balancing_credits", "ct"))


def exact(value: int, lang: str = "en") -> str:
    """A scaled integer in whole units, every digit kept (``portal.web.api.units``'s rule);
    a decimal comma in German."""
    digits = str(abs(value)).rjust(SCALE + 1, "0")
    whole, fraction = digits[:-SCALE], digits[-SCALE:].rstrip("0")
    text = ("-" if value < 0 else "") + (f"{whole}.{fraction}" if fraction else whole)
    return text.replace(".", ",") if lang == "de" else text


def short(value: int, places: int, lang: str) -> str:
    """A scaled integer rounded to ``places`` decimals, for the explanatory lines."""
    text = f"{value / 10**SCALE:.{places}f}"
    return text.replace(".", ",") if lang == "de" else text


def when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def latin1(text: str) -> str:
    """What Helvetica can print: Latin-1, anything else as ``?``."""
    return text.encode("latin-1", "replace").decode("latin-1")


# DejaVu Sans as Debian's fonts-dejavu-core installs it: regular and bold.
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}


def has_fonts(directory: Path | None) -> bool:
    """Whether ``directory`` holds the statement's fonts."""
    return directory is not None and all((directory / name).is_file()
                                         for name in FONT_FILES.values())


@dataclass(frozen=True)
class Typeface:
    """The font family a document is set in and what it can print of a text."""

    family: str
    printable: Callable[[str], str]


def typeface(pdf: FPDF, fonts: Path | None) -> Typeface:
    """DejaVu Sans from ``fonts``, embedded in ``pdf``; Helvetica (Latin-1) without it."""
    if fonts is None or not has_fonts(fonts):
        return Typeface("Helvetica", latin1)
    for style, name in FONT_FILES.items():
        pdf.add_font("DejaVu", style, str(fonts / name))
    return Typeface("DejaVu", str)


@dataclass(frozen=True)
class StatementDocument:
    """Everything one statement document shows."""

    network: str
    contract: str
    chain_id: int
    participant: str
    name: str | None
    period: int
    start_slot: int | None
    statement: Mapping[str, Any]
    close_tx: str | None
    close_block: int | None
    trades: Sequence[Mapping[str, Any]]
    names: Mapping[str, str]
    balancing: Sequence[Mapping[str, Any]]


class _Pdf(FPDF):
    def __init__(self, footer_text: str, fonts: Path | None) -> None:
        super().__init__(format="A4")
        self.footer_text = footer_text
        self.face = typeface(self, fonts)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.face.family, size=8)
        self.cell(0, 6, self.face.printable(self.footer_text.format(page=self.page_no())),
                  align="C")


def render(doc: StatementDocument, lang: str = "en", fonts: Path | None = None) -> bytes:
    """The statement as a PDF document, set in the fonts of directory ``fonts``
    (:data:`FONT_FILES`) or, without them, in Helvetica."""
    words = LABELS[lang]
    pdf = _Pdf(f"{doc.network} - {words['title']} - {words['period'].format(period=doc.period)}"
               f" - {words['page']}", fonts)
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_page()
    face = pdf.face

    def line(text: str, *, size: float = 10, style: str = "", height: float = 6) -> None:
        pdf.set_font(face.family, style, size)
        pdf.multi_cell(0, height, face.printable(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line(f"{doc.network} - {words['title']}", size=18, style="B", height=10)
    line(words["period"].format(period=doc.period), size=13, style="B", height=8)
    line(f"{words['participant']}: {doc.name or doc.participant}")
    line(f"{words['id']}: {doc.participant}")
    start = words["start"] if doc.start_slot is None else f"{when(doc.start_slot)} UTC"
    line(f"{words['from']}: {start}")
    line(f"{words['to']}: {when(int(doc.statement['end_slot']))} UTC")
    pdf.ln(3)

    line(words["summary"], size=12, style="B", height=8)
    for key, unit in AMOUNT_LINES:
        line(f"{words[key]}: {exact(int(doc.statement[key]), lang)} {unit}")
    net = int(doc.statement["net"])
    euros = short(abs(net) // 100, 2, lang)
    line(f"{words['net']}: {exact(net, lang)} ct "
         f"({words['net_receive'] if net >= 0 else words['net_owe']}, "
         f"{words['rounded'].format(euros=euros)})", style="B")
    line(f"{words['paid']}: {words['yes'] if doc.statement['paid'] else words['no']}")
    pdf.ln(3)

    line(words["balancing"], size=12, style="B", height=8)
    if not doc.balancing:
        line(words["none"])
    for item in doc.balancing:
        line(words[str(item["kind"])].format(
            slot=when(int(item["slot"])), measured=short(int(item["measured"]), 3, lang),
            traded=short(int(item["traded"]), 3, lang), dev=short(int(item["deviation"]), 3,
                                                                  lang),
            rate=short(int(item["rate"]), 2, lang), amount=exact(int(item["amount"]), lang)))
    pdf.ln(3)

    _trades(pdf, doc, words, lang)
    pdf.ln(3)
    line(words["verify"], size=12, style="B", height=8)
    line(f"{words['contract']}: {doc.contract}", size=9)
    line(f"{words['chain']}: {doc.chain_id}", size=9)
    if doc.close_tx:
        line(f"{words['closed_in']} {doc.close_tx} ({words['block']} {doc.close_block})",
             size=9)
    line(words["call"].format(period=doc.period, pid=doc.participant), size=9)
    return bytes(pdf.output())


def _trades(pdf: _Pdf, doc: StatementDocument, words: Mapping[str, str], lang: str) -> None:
    """The period's trades, one row each: slot, market, side, counterparty, kWh, ct."""
    face = pdf.face
    pdf.set_font(face.family, "B", 12)
    pdf.cell(0, 8, face.printable(words["trades"].format(count=len(doc.trades))),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    widths = (32, 42, 18, 50, 22, 26)
    heads = (words["slot"], words["market"], words["side"], words["with"], words["kwh"],
             words["ct"])

    def head() -> None:
        pdf.set_font(face.family, "B", 8)
        for width, text in zip(widths, heads, strict=True):
            pdf.cell(width, 5, face.printable(text), border="B", align="R" if width in (22, 26)
                     else "L")
        pdf.ln(5)
        pdf.set_font(face.family, "", 8)

    head()
    for trade in doc.trades:
        if pdf.will_page_break(5):
            pdf.add_page()
            head()
        sold = trade["seller"] == doc.participant
        other = str(trade["buyer"] if sold else trade["seller"])
        market = str(trade["market"])
        cells = (when(int(trade["time_slot"])), doc.names.get(market, market[:8] + "..."),
                 words["sold"] if sold else words["bought"],
                 words["yourself"] if other == doc.participant
                 else doc.names.get(other, other[:8] + "..."),
                 exact(int(trade["energy"]), lang), exact(int(trade["price"]), lang))
        for index, (width, text) in enumerate(zip(widths, cells, strict=True)):
            pdf.cell(width, 5, face.printable(text)[:40], align="R" if index >= 4 else "L")
        pdf.ln(5)
