"""The portal's languages: English and German (the BC4P pilot is in Germany).

Chosen per request: the ``lang`` query parameter if it names one (the page's switch, links
to documents), else the ``pilotchain_lang`` cookie the switch sets, else the best match of
the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from flask import request

LANGUAGES = ("en", "de")
COOKIE = "pilotchain_lang"


def chosen_language() -> str:
    """The language of this request's answer."""
    for raw in (request.args.get("lang", ""), request.cookies.get(COOKIE, "")):
        if raw in LANGUAGES:
            return raw
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]

LANGUAGE_NAMES = (("en", "English"), ("de", "Deutsch"))

# The page's English sentences (the template's and portal.js's) in German. The English text
# is the key; a sentence missing here would show in English (tests/test_portal_i18n.py
# holds every one of them translated).
GERMAN: dict[str, str] = {
    # the page (templates/portal.html)
    "participant portal": "Teilnehmerportal",
    "Skip to the content": "Zum Inhalt springen",
    "Language": "Sprache",
    "Show ids": "IDs zeigen",
    "Sign out": "Abmelden",
    "Your energy, your bill": "Ihre Energie, Ihre Rechnung",
    "What you bought from your neighbours and at what price, what you sold, what the grid "
    "supplied, what you owe this period and why. Sign in with your wallet (MetaMask or any "
    "browser wallet): it signs a one-time message, no password and no transaction.":
        "Was Sie von Ihren Nachbarn zu welchem Preis gekauft haben, was Sie verkauft haben, "
        "was das Netz geliefert hat, was Sie in diesem Zeitraum schulden und warum. Melden "
        "Sie sich mit Ihrer Wallet an (MetaMask oder eine andere Browser-Wallet): Sie "
        "signiert eine einmalige Nachricht, ohne Passwort und ohne Transaktion.",
    "Sign in with your wallet": "Mit der Wallet anmelden",
    "Wallets are registered to participants by {contact}.":
        "Wallets werden Teilnehmern von {contact} zugeordnet.",
    "Your billing period at a glance": "Ihr Abrechnungszeitraum auf einen Blick",
    "Billing period": "Abrechnungszeitraum",
    "open period (running)": "offener Zeitraum (laufend)",
    "Balancing: why you were charged": "Ausgleich: warum Ihnen etwas berechnet wurde",
    "Your meter compared with your trades, slot by slot, at the operator's rates.":
        "Ihr Zähler verglichen mit Ihrem Handel, Zeitfenster für Zeitfenster, zu den Tarifen "
        "des Netzbetreibers.",
    "No balancing charge or credit in this period.":
        "Kein Ausgleichsentgelt und keine Gutschrift in diesem Zeitraum.",
    "Your meters": "Ihre Zähler",
    "Meter {meter}: last reading {at} (import {imported} Wh, export {exported} Wh).":
        "Zähler {meter}: letzter Messwert {at} (Bezug {imported} Wh, Einspeisung {exported} "
        "Wh).",
    "Meter {meter}: no reading on chain yet.": "Zähler {meter}: noch kein Messwert auf der Chain.",
    "No meter is registered for you.": "Für Sie ist kein Zähler registriert.",
    "{count} slots closed unmetered in this period (nothing charged for them).":
        "{count} Zeitfenster in diesem Zeitraum ungemessen abgeschlossen (dafür nichts "
        "berechnet).",
    "Current bill": "Aktuelle Rechnung",
    "(live from the contract, every period so far)":
        "(direkt aus dem Vertrag, alle bisherigen Zeiträume)",
    "Bill as CSV": "Rechnung als CSV",
    "Energy per slot": "Energie je Zeitfenster",
    "Traded (bought minus sold) against measured (imported minus exported) energy, and the "
    "balancing charge of each closed slot. Drag across the chart to zoom, double-click to "
    "zoom out.":
        "Gehandelte (gekauft minus verkauft) gegen gemessene (bezogen minus eingespeist) "
        "Energie und das Ausgleichsentgelt jedes abgeschlossenen Zeitfensters. Zum "
        "Vergrößern über das Diagramm ziehen, Doppelklick zum Verkleinern.",
    "Chart of traded and measured energy per slot":
        "Diagramm der gehandelten und gemessenen Energie je Zeitfenster",
    "No metered slot is closed yet.": "Noch ist kein gemessenes Zeitfenster abgeschlossen.",
    "Slot": "Zeitfenster",
    "Status": "Status",
    "Bought kWh": "Gekauft kWh",
    "The community's energy per slot": "Die Energie der Gemeinschaft je Zeitfenster",
    "The newest day of balanced slots, over the metered participants: what their meters "
    "measured, what they bought from each other, and what the grid supplied or took beyond "
    "their trades.":
        "Der jüngste Tag ausgeglichener Zeitfenster, über die Teilnehmer mit Zähler: was ihre "
        "Zähler gemessen haben, was sie einander abgekauft haben und was das Netz über ihren "
        "Handel hinaus geliefert oder aufgenommen hat.",
    "No metered slot is balanced yet.": "Noch ist kein gemessenes Zeitfenster ausgeglichen.",
    "Metered participants": "Teilnehmer mit Zähler",
    "Bought in the community kWh": "In der Gemeinschaft gekauft kWh",
    "From the grid kWh": "Aus dem Netz kWh",
    "To the grid kWh": "Ins Netz kWh",
    "Sold kWh": "Verkauft kWh",
    "Imported kWh": "Bezogen kWh",
    "Exported kWh": "Eingespeist kWh",
    "Charge ct": "Entgelt ct",
    "Credit ct": "Gutschrift ct",
    "Slots as CSV": "Zeitfenster als CSV",
    "Per day (UTC)": "Je Tag (UTC)",
    "Day": "Tag",
    "Metered slots": "Gemessene Zeitfenster",
    "Trades": "Handel",
    "Market": "Markt",
    "all": "alle",
    "open": "offen",
    "Side": "Seite",
    "With": "Mit",
    "kWh": "kWh",
    "Price ct": "Preis ct",
    "Transaction": "Transaktion",
    "Previous": "Zurück",
    "Next": "Weiter",
    "Trades as CSV": "Handel als CSV",
    "Billing-period statements": "Abrechnungen der Zeiträume",
    "Period": "Zeitraum",
    "Ends": "Endet",
    "Receivable ct": "Forderung ct",
    "Payable ct": "Verbindlichkeit ct",
    "Charges ct": "Entgelte ct",
    "Credits ct": "Gutschriften ct",
    "Net ct": "Saldo ct",
    "Paid": "Bezahlt",
    "Document": "Dokument",
    "Statements as CSV": "Abrechnungen als CSV",
    "Grid operator": "Netzbetreiber",
    "Services": "Dienste",
    "What the bridge, the meter ingest, its MQTT subscriber and the slot closer report on "
    "their own health endpoints: up, degraded (behind on their stream, or their broker "
    "session lost) or down.":
        "Was die Bridge, die Zählerannahme, ihr MQTT-Abonnent und der Zeitfenster-Abschluss "
        "an ihren eigenen Health-Endpunkten melden: in Betrieb, beeinträchtigt (im Rückstand "
        "mit ihrem Stream oder die Broker-Sitzung verloren) oder ausgefallen.",
    "Service": "Dienst",
    "State": "Zustand",
    "What it says": "Was er meldet",
    "Dead-lettered entries waiting for attention":
        "Zurückgewiesene Einträge, die Aufmerksamkeit brauchen",
    "Entries the bridge (trades) and the ingest (meter readings) refused, newest first, with "
    "the reason.":
        "Einträge, die die Bridge (Handel) und die Zählerannahme (Messwerte) zurückgewiesen "
        "haben, die neuesten zuerst, mit dem Grund.",
    "Transactions, signed by your wallet": "Transaktionen, von Ihrer Wallet signiert",
    "The portal prepares each transaction and checks it against the contract; your wallet "
    "signs and sends it. The portal holds no key.":
        "Das Portal bereitet jede Transaktion vor und prüft sie gegen den Vertrag; Ihre "
        "Wallet signiert und sendet sie. Das Portal hält keinen Schlüssel.",
    "Register a participant's wallet": "Wallet eines Teilnehmers registrieren",
    "Participant id": "Teilnehmer-ID",
    "Wallet": "Wallet",
    "Sign and send with my wallet": "Mit meiner Wallet signieren und senden",
    "Register a meter": "Zähler registrieren",
    "Meter id": "Zähler-ID",
    "Meter's signing address": "Signieradresse des Zählers",
    "Home area": "Heimatbereich",
    "the participant's own id": "die eigene ID des Teilnehmers",
    "Deactivate a meter": "Zähler deaktivieren",
    "Ends at (slot boundary, UTC)": "Endet um (Zeitfenstergrenze, UTC)",
    "the current slot's start": "Beginn des aktuellen Zeitfensters",
    "Close a billing period": "Abrechnungszeitraum abschließen",
    "Ends at (slot boundary, UTC; e.g. 2026-06-21T00:00:00Z)":
        "Endet um (Zeitfenstergrenze, UTC; z. B. 2026-06-21T00:00:00Z)",
    "Names": "Namen",
    "gsy-e names participants and areas in its trades; give any of them a name of your own "
    "(kept in the portal, not on chain). An empty name brings gsy-e's back.":
        "gsy-e benennt Teilnehmer und Bereiche in seinem Handel; geben Sie jedem einen "
        "eigenen Namen (im Portal gespeichert, nicht auf der Chain). Ein leerer Name bringt "
        "den von gsy-e zurück.",
    "Participant or market id": "Teilnehmer- oder Markt-ID",
    "Name": "Name",
    "Save the name": "Namen speichern",
    "Participants": "Teilnehmer",
    "Participant": "Teilnehmer",
    "Actions": "Aktionen",
    "Meters": "Zähler",
    "Meter": "Zähler",
    "Signer": "Signierer",
    "Active until": "Aktiv bis",
    "Last reading": "Letzter Messwert",
    "Find a participant (name, id or wallet)": "Teilnehmer suchen (Name, ID oder Wallet)",
    "{shown} of {total} participants shown": "{shown} von {total} Teilnehmern angezeigt",
    "Net of the open billing period: what each participant's statement will say once the "
    "period is closed, from the trades and balancing recorded since the last one; positive "
    "when the participant is owed money, negative when it owes.":
        "Saldo der offenen Abrechnungsperiode: was die Abrechnung jedes Teilnehmers nach dem "
        "Abschluss der Periode ausweisen wird, aus dem Handel und dem Ausgleich seit dem "
        "letzten Abschluss; positiv, wenn der Teilnehmer Geld bekommt, negativ, wenn er "
        "schuldet.",
    "Net of the open period, ct": "Saldo der offenen Periode, ct",
    "Links the wallet to the participant on chain: that wallet then signs in here as the "
    "participant and sees its bill. The contract refuses a wallet already linked.":
        "Verknüpft die Wallet auf der Chain mit dem Teilnehmer: Diese Wallet meldet sich dann "
        "hier als der Teilnehmer an und sieht seine Rechnung. Der Vertrag lehnt eine schon "
        "verknüpfte Wallet ab.",
    "From the current slot on, the contract accepts readings signed by this address for the "
    "participant, and compares them with its trades with the outside of its home area.":
        "Ab dem aktuellen Zeitfenster nimmt der Vertrag von dieser Adresse signierte "
        "Messwerte für den Teilnehmer an und vergleicht sie mit seinem Handel über die Grenze "
        "seines Heimatbereichs.",
    "The meter's readings after this time are refused; those before stay. Slots after it "
    "close unmetered unless another meter is registered.":
        "Messwerte des Zählers nach diesem Zeitpunkt werden abgelehnt; frühere bleiben. "
        "Spätere Zeitfenster schließen ungemessen, wenn kein anderer Zähler registriert ist.",
    "Fixes every participant's statement on chain for the trades recorded since the last "
    "period and the slots closed until this time; it cannot be undone.":
        "Legt die Abrechnung jedes Teilnehmers auf der Chain fest, für den seit dem letzten "
        "Zeitraum aufgezeichneten Handel und die bis zu diesem Zeitpunkt abgeschlossenen "
        "Zeitfenster; das lässt sich nicht rückgängig machen.",
    "none yet": "noch keiner",
    "1 reading missing": "1 Messwert fehlt",
    "{count} readings missing": "{count} Messwerte fehlen",
    "Unmetered slots": "Ungemessene Zeitfenster",
    "Privacy: this portal shows each participant only its own data and the names of its own "
    "counterparties. The chain itself is readable by anyone with access to its RPC node.":
        "Datenschutz: Dieses Portal zeigt jedem Teilnehmer nur seine eigenen Daten und die "
        "Namen seiner eigenen Handelspartner. Die Chain selbst kann jeder lesen, der Zugang "
        "zu ihrem RPC-Knoten hat.",
    # the page's script (static/portal.js)
    " (the newest {shown} shown)": " (die neuesten {shown} gezeigt)",
    "Balancing charges": "Ausgleichsentgelte",
    "Balancing credits": "Ausgleichsgutschriften",
    "Balancing": "Ausgleich",
    "Bought from the community": "Aus der Gemeinschaft gekauft",
    "Deactivate": "Deaktivieren",
    "Earned beyond the feed-in rate": "Mehrerlös über der Einspeisevergütung",
    "Energy bought": "Gekaufte Energie",
    "Energy sold": "Verkaufte Energie",
    "From the grid": "Aus dem Netz",
    "Grid operator ({wallet})": "Netzbetreiber ({wallet})",
    "Net for the period": "Saldo des Zeitraums",
    "Net": "Saldo",
    "No browser wallet was found; install MetaMask (or another wallet) and reload this page.":
        "Keine Browser-Wallet gefunden; installieren Sie MetaMask (oder eine andere Wallet) "
        "und laden Sie diese Seite neu.",
    "Participant {id}": "Teilnehmer {id}",
    "Payable": "Verbindlichkeit",
    "Receivable": "Forderung",
    "Saved by buying in the community": "Durch Kauf in der Gemeinschaft gespart",
    "Self-sufficiency": "Autarkiegrad",
    "of the energy you drew came from the community":
        "der bezogenen Energie kam aus der Gemeinschaft",
    "you drew no energy in this period": "in diesem Zeitraum keine Energie bezogen",
    "Sent: {hash}": "Gesendet: {hash}",
    "Sold": "Verkauft",
    "Statement of period {period} as PDF": "Abrechnung des Zeitraums {period} als PDF",
    "The portal answered {status}.": "Das Portal antwortete {status}.",
    "The portal sent no answer; try again.":
        "Das Portal hat nicht geantwortet; versuchen Sie es noch einmal.",
    "This portal signs you in at {domain}; open {url} and sign in there.":
        "Dieses Portal meldet Sie unter {domain} an; öffnen Sie {url} und melden Sie sich "
        "dort an.",
    "Unregister": "Abmelden lassen",
    "You exported {measured} kWh but sold {traded} kWh in the slot from {at}: {dev} kWh "
    "short, charged at {rate}.":
        "Sie haben im Zeitfenster ab {at} {measured} kWh eingespeist, aber {traded} kWh "
        "verkauft: {dev} kWh zu wenig, berechnet mit {rate}.",
    "You exported {measured} kWh but sold {traded} kWh in the slot from {at}: {dev} kWh went "
    "to the grid, credited at the feed-in rate of {rate}.":
        "Sie haben im Zeitfenster ab {at} {measured} kWh eingespeist, aber {traded} kWh "
        "verkauft: {dev} kWh gingen ins Netz, gutgeschrieben mit der Einspeisevergütung von "
        "{rate}.",
    "You imported {measured} kWh but bought {traded} kWh in the slot from {at}: {dev} kWh "
    "came from the grid, charged at the grid-supply rate of {rate}.":
        "Sie haben im Zeitfenster ab {at} {measured} kWh bezogen, aber {traded} kWh gekauft: "
        "{dev} kWh kamen aus dem Netz, berechnet mit dem Netzbezugstarif von {rate}.",
    "active": "aktiv",
    "against the feed-in rate of {rate}": "gegenüber der Einspeisevergütung von {rate}",
    "against the grid-supply rate of {rate}": "gegenüber dem Netzbezugstarif von {rate}",
    "balancing ct": "Ausgleich ct",
    "bought": "gekauft",
    "market": "Markt",
    "measured beyond what you bought, in {count} metered slots":
        "über Ihren Kauf hinaus gemessen, in {count} gemessenen Zeitfenstern",
    "measured kWh": "gemessen kWh",
    "no metered slot closed in this period":
        "kein gemessenes Zeitfenster in diesem Zeitraum abgeschlossen",
    "no": "nein",
    "page {page} of {pages} ({total} trades)": "Seite {page} von {pages} ({total} Geschäfte)",
    "period {period} (to {end})": "Zeitraum {period} (bis {end})",
    "period {period}": "Zeitraum {period}",
    "sold": "verkauft",
    "traded kWh": "gehandelt kWh",
    "yes": "ja",
    "you owe": "Sie zahlen",
    "you receive": "Sie erhalten",
    "yourself": "Sie selbst",
    "{count} trades": "{count} Geschäfte",
    "{id} has no name now.": "{id} hat jetzt keinen Namen.",
    "{id} is now shown as {name}.": "{id} wird jetzt als {name} gezeigt.",
    "{money} charged": "{money} berechnet",
    "{money} credited": "{money} gutgeschrieben",
    "{money}, on average {price}": "{money}, im Mittel {price}",
    "{trades} trades, {energy} kWh, {price} ct traded.":
        "{trades} Geschäfte, {energy} kWh, {price} ct gehandelt.",
    "balanced": "ausgeglichen",
    "unmetered": "ungemessen",
    "up": "in Betrieb",
    "degraded": "beeinträchtigt",
    "down": "ausgefallen",
    "participant": "Teilnehmer",
    "Refused at": "Zurückgewiesen um",
    "Reason": "Grund",
    "Entry": "Eintrag",
    "Payload": "Inhalt",
    "{service}: {count} entry in {stream}": "{service}: {count} Eintrag in {stream}",
    "{service}: {count} entries in {stream}": "{service}: {count} Einträge in {stream}",
}
CATALOGUES: dict[str, dict[str, str]] = {"en": {}, "de": GERMAN}


def translate(lang: str, text: str) -> str:
    """``text`` (English) in ``lang``; itself if no translation is known."""
    return CATALOGUES.get(lang, {}).get(text, text)
