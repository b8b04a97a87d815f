"""The portal's languages: English and German (the BC4P pilot is in Germany).

Chosen per request: the ``lang`` query parameter if it names one (the page's switch, links
to documents), else the ``pilotchain_lang`` cookie the switch sets, else the best match of
the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from flask import request

from pilotchain.errors import Phrase

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
    "Wallets are registered to participants by the grid operator.":
        "Wallets werden Teilnehmern vom Netzbetreiber zugeordnet.",
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
# The API's error sentences in German: the templates of the errors the portal answers (each
# raised as its English template and its values, see pilotchain.errors.Phrase), and the words
# and clauses filled into them. tests/test_portal_i18n.py finds every one at its raise site.
GERMAN_ERRORS: dict[str, str] = {
    # the HTTP edge (portal/web/app.py, http.py)
    "There is no such portal endpoint.": "Diesen Endpunkt hat das Portal nicht.",
    "This endpoint does not accept {method} requests.":
        "Dieser Endpunkt nimmt keine {method}-Anfragen an.",
    "The request body is too large.": "Der Inhalt der Anfrage ist zu groß.",
    "The portal cannot answer this request (HTTP status {status}).":
        "Das Portal kann diese Anfrage nicht beantworten (HTTP-Status {status}).",
    "The portal hit an unexpected error; please try again in a minute.":
        "Im Portal ist ein unerwarteter Fehler aufgetreten; bitte versuchen Sie es in einer "
        "Minute noch einmal.",
    "The request did not carry this page's security token (or it had expired), so nothing "
    "was done; reload the page and try again.":
        "Die Anfrage trug das Sicherheitstoken dieser Seite nicht (oder es war abgelaufen), "
        "daher wurde nichts ausgeführt; laden Sie die Seite neu und versuchen Sie es noch "
        "einmal.",
    "Sign in with your wallet first (or again: the sign-in has ended).":
        "Melden Sie sich zuerst mit Ihrer Wallet an (oder erneut: die Anmeldung ist "
        "abgelaufen).",
    "You may see only your own participant's data.":
        "Sie dürfen nur die Daten Ihres eigenen Teilnehmers sehen.",
    "Only the grid operator's wallet may do this.":
        "Das darf nur die Wallet des Netzbetreibers.",
    "The JSON body is nested too deeply; send a flat JSON object.":
        "Der JSON-Inhalt ist zu tief verschachtelt; senden Sie ein flaches JSON-Objekt.",
    # the API (portal/web/api.py)
    "{name} must be a whole number between {low} and {high}, not {raw!r}.":
        "{name} muss eine ganze Zahl zwischen {low} und {high} sein, nicht {raw!r}.",
    "market must be a market id (a gsy-e uuid, or 0x and 64 hexadecimal digits), not "
    "{raw!r}.":
        "market muss eine Markt-ID sein (eine gsy-e-UUID oder 0x und 64 "
        "Hexadezimalziffern), nicht {raw!r}.",
    "There is no closed billing period {period}.":
        "Es gibt keinen abgeschlossenen Abrechnungszeitraum {period}.",
    "The period must be a whole number between 1 and {most}, not {period!r}.":
        "Der Zeitraum muss eine ganze Zahl zwischen 1 und {most} sein, nicht {period!r}.",
    "There is no {kind}.csv; try trades, slots, statements or bill.":
        "Es gibt keine {kind}.csv; versuchen Sie trades, slots, statements oder bill.",
    "Send {name} in a JSON object.": "Senden Sie {name} in einem JSON-Objekt.",
    "wallet": "Wallet",
    "meter's signing address": "Signieradresse des Zählers",
    "There is no operator transaction {action!r}; try {actions}.":
        "Es gibt keine Transaktion des Netzbetreibers {action!r}; versuchen Sie {actions}.",
    "id must be a participant or market id (a gsy-e uuid, or 0x and 64 hexadecimal digits).":
        "id muss eine Teilnehmer- oder Markt-ID sein (eine gsy-e-UUID oder 0x und 64 "
        "Hexadezimalziffern).",
    "Send name as text (empty, or null, clears it).":
        "Senden Sie name als Text (leer oder null löscht den Namen).",
    "A name is 1 to {most} printable characters.":
        "Ein Name besteht aus 1 bis {most} druckbaren Zeichen.",
    # signing in (portal/web/auth.py, store.py, portal/siwe.py)
    "Send a JSON object as the request body.":
        "Senden Sie ein JSON-Objekt als Inhalt der Anfrage.",
    "address must be the wallet's 0x address.":
        "address muss die 0x-Adresse der Wallet sein.",
    "Send the signed message as message and the signature as signature.":
        "Senden Sie die signierte Nachricht als message und die Signatur als signature.",
    "The wallet {wallet} is not registered to a participant of {network}; ask {contact} to "
    "register it.":
        "Die Wallet {wallet} ist keinem Teilnehmer von {network} zugeordnet; bitten Sie "
        "{contact}, sie zu registrieren.",
    "The wallet {wallet} is not registered to a participant of {network}; ask the grid "
    "operator to register it.":
        "Die Wallet {wallet} ist keinem Teilnehmer von {network} zugeordnet; bitten Sie den "
        "Netzbetreiber, sie zu registrieren.",
    "Too many sign-in messages were asked for from your network address ({most} may wait "
    "for a signature at once); sign the last one, or try again in {wait}.":
        "Von Ihrer Netzwerkadresse wurden zu viele Anmeldenachrichten angefordert (höchstens "
        "{most} dürfen gleichzeitig auf eine Signatur warten); signieren Sie die letzte oder "
        "versuchen Sie es in {wait} noch einmal.",
    "This sign-in message was already used or was not issued by this portal; sign in again.":
        "Diese Anmeldenachricht wurde schon verwendet oder nicht von diesem Portal "
        "ausgestellt; melden Sie sich noch einmal an.",
    "This sign-in message waited too long for its signature; sign in again.":
        "Diese Anmeldenachricht hat zu lange auf ihre Signatur gewartet; melden Sie sich noch "
        "einmal an.",
    "This sign-in message was issued to another wallet; sign in again.":
        "Diese Anmeldenachricht wurde für eine andere Wallet ausgestellt; melden Sie sich noch "
        "einmal an.",
    "This sign-in message is not the one the portal issued: it was changed after it was "
    "issued, so nothing was signed in; sign in again.":
        "Diese Anmeldenachricht ist nicht die, die das Portal ausgestellt hat: Sie wurde "
        "danach verändert, daher wurde niemand angemeldet; melden Sie sich noch einmal an.",
    "The sign-in message is not a valid EIP-4361 message: {reason}":
        "Die Anmeldenachricht ist keine gültige EIP-4361-Nachricht: {reason}",
    "{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z, not {raw!r}.":
        "{name} muss eine Zeit nach RFC 3339 wie 2026-01-31T12:00:00Z sein, nicht {raw!r}.",
    "{name} {raw!r} is not a real date and time.":
        "{name} {raw!r} ist kein gültiges Datum mit Uhrzeit.",
    "line {line} must start with {prefix!r}.": "Zeile {line} muss mit {prefix!r} beginnen.",
    "it must be non-empty text of at most 4,096 characters.":
        "Sie muss ein nicht leerer Text von höchstens 4.096 Zeichen sein.",
    "lines must end with a line feed alone.":
        "Zeilen müssen allein mit einem Zeilenvorschub enden.",
    "the first line must end with {header!r}.":
        "Die erste Zeile muss mit {header!r} enden.",
    "the domain {domain!r} is not a host name with an optional port.":
        "Die Domain {domain!r} ist kein Hostname mit optionalem Port.",
    "it is too short.": "Sie ist zu kurz.",
    "the second line must be the wallet's address in EIP-55 mixed case.":
        "Die zweite Zeile muss die Adresse der Wallet in gemischter Schreibung nach EIP-55 "
        "sein.",
    "line 3 must be empty.": "Zeile 3 muss leer sein.",
    "the statement must be one line followed by an empty line.":
        "Die Erklärung muss eine Zeile sein, gefolgt von einer leeren Zeile.",
    "Version must be 1, not {version!r}.": "Version muss 1 sein, nicht {version!r}.",
    "Chain ID must be a positive whole number, not {chain!r}.":
        "Chain ID muss eine positive ganze Zahl sein, nicht {chain!r}.",
    "Nonce must be at least 8 letters and digits.":
        "Nonce muss aus mindestens 8 Buchstaben und Ziffern bestehen.",
    "URI {uri!r} is not an absolute URI.": "URI {uri!r} ist keine absolute URI.",
    "line {line} ({text!r}) is not a field of the message or is out of order.":
        "Zeile {line} ({text!r}) ist kein Feld der Nachricht oder steht an der falschen "
        "Stelle.",
    "line {line} must be a resource: '- ' and an absolute URI.":
        "Zeile {line} muss eine Ressource sein: '- ' und eine absolute URI.",
    "The signature must be 0x followed by 130 hexadecimal digits, as the wallet returns it.":
        "Die Signatur muss 0x gefolgt von 130 Hexadezimalziffern sein, so wie die Wallet sie "
        "zurückgibt.",
    "The signature is not a valid Ethereum signature.":
        "Die Signatur ist keine gültige Ethereum-Signatur.",
    "The message asks to sign in to {asked}, not to {domain}; nothing was signed in. Sign in "
    "from this portal's own page.":
        "Die Nachricht will bei {asked} anmelden, nicht bei {domain}; niemand wurde "
        "angemeldet. Melden Sie sich auf der eigenen Seite dieses Portals an.",
    "The message's URI {uri} is not on {domain}.":
        "Die URI {uri} der Nachricht liegt nicht auf {domain}.",
    "The message is for chain {asked}, but this portal serves chain {chain}; switch the "
    "wallet to this network and sign in again.":
        "Die Nachricht ist für die Chain {asked}, dieses Portal bedient aber die Chain "
        "{chain}; stellen Sie die Wallet auf dieses Netzwerk um und melden Sie sich noch "
        "einmal an.",
    "The sign-in message has expired; sign in again.":
        "Die Anmeldenachricht ist abgelaufen; melden Sie sich noch einmal an.",
    "The sign-in message is not valid yet (Not Before is in the future); check the "
    "computer's clock.":
        "Die Anmeldenachricht ist noch nicht gültig (Not Before liegt in der Zukunft); prüfen "
        "Sie die Uhr des Computers.",
    "The sign-in message was issued in the future; check the computer's clock.":
        "Die Anmeldenachricht wurde in der Zukunft ausgestellt; prüfen Sie die Uhr des "
        "Computers.",
    "The signature was made by {signer}, not by {wallet}, the wallet the message names; "
    "nothing was signed in.":
        "Die Signatur stammt von {signer}, nicht von {wallet}, der Wallet, die die Nachricht "
        "nennt; niemand wurde angemeldet.",
    # the chain (portal/web/ledger.py)
    "{participant!r} is not a participant id (a gsy-e uuid or 0x and 64 hexadecimal "
    "digits).":
        "{participant!r} ist keine Teilnehmer-ID (eine gsy-e-UUID oder 0x und 64 "
        "Hexadezimalziffern).",
    "{action} failed: the chain cannot be reached right now; try again in a minute.":
        "{action} ist fehlgeschlagen: Die Chain ist gerade nicht erreichbar; versuchen Sie es "
        "in einer Minute noch einmal.",
    "{action} could not be checked: the chain cannot be reached right now; try again in a "
    "minute.":
        "{action} konnte nicht geprüft werden: Die Chain ist gerade nicht erreichbar; "
        "versuchen Sie es in einer Minute noch einmal.",
    "Looking up the wallet": "Das Nachschlagen der Wallet",
    "Looking up the wallet's role": "Das Nachschlagen der Rolle der Wallet",
    "Reading the bill": "Das Lesen der Rechnung",
    "Reading the periods": "Das Lesen der Zeiträume",
    "Reading the statements": "Das Lesen der Abrechnungen",
    "Reading the slot length": "Das Lesen der Zeitfensterlänge",
    "Reading the newest block": "Das Lesen des neuesten Blocks",
    # the operator's forms (pilotchain/operator_input.py)
    "id": "ID",
    "meter id": "Zähler-ID",
    "home area": "Heimatbereich",
    "participant": "Teilnehmer",
    "address": "Adresse",
    "rate": "Tarif",
    "The {what} {text!r} is neither a uuid nor 0x and 64 hex digits.":
        "Die Angabe {text!r} ({what}) ist weder eine UUID noch 0x und 64 "
        "Hexadezimalziffern.",
    "The {what} {text!r} is not an Ethereum address (0x and 40 hex digits, with a valid "
    "checksum if mixed case).":
        "Die Angabe {text!r} ({what}) ist keine Ethereum-Adresse (0x und 40 "
        "Hexadezimalziffern, in gemischter Schreibung mit gültiger Prüfsumme).",
    "The {what} cannot be the zero address.":
        "{what}: Die Nulladresse ist nicht zulässig.",
    "The time {text!r} is neither unix seconds nor ISO-8601 such as 2026-06-21T00:15:00Z.":
        "Die Zeit {text!r} ist weder in Unix-Sekunden noch nach ISO 8601 wie "
        "2026-06-21T00:15:00Z angegeben.",
    "The time {text!r} must be whole seconds after 1970.":
        "Die Zeit {text!r} muss in ganzen Sekunden nach 1970 liegen.",
    "The time {text!r} must be whole seconds after 1970 and before the year 10000.":
        "Die Zeit {text!r} muss in ganzen Sekunden nach 1970 und vor dem Jahr 10000 liegen.",
    "The {what} {text!r} is not a number of euro cents per kWh.":
        "Die Angabe {text!r} ({what}) ist keine Zahl von Euro-Cent je kWh.",
    "The {what} {text!r} must be a number of euro cents per kWh, at least 0.":
        "Die Angabe {text!r} ({what}) muss eine Zahl von Euro-Cent je kWh sein, mindestens 0.",
    "The {what} {text!r} has more than 18 decimals.":
        "Die Angabe {text!r} ({what}) hat mehr als 18 Nachkommastellen.",
    "The {what} {text!r} is too large for the contract (at most {most} ct/kWh).":
        "Die Angabe {text!r} ({what}) ist zu groß für den Vertrag (höchstens {most} ct/kWh).",
    "{text!r} is not a whole number of seconds above 0.":
        "{text!r} ist keine ganze Zahl von Sekunden über 0.",
    # the operator's transactions and the contract's refusals (pilotchain/operator.py)
    "Registering the wallet of {participant}": "Die Registrierung der Wallet von {participant}",
    "Unregistering the wallet of {participant}":
        "Das Abmelden der Wallet von {participant}",
    "Registering meter {meter}": "Die Registrierung des Zählers {meter}",
    "Deactivating meter {meter}": "Das Deaktivieren des Zählers {meter}",
    "Closing the period": "Der Abschluss des Zeitraums",
    "{action} refused: {reason}": "{action} wurde abgelehnt: {reason}",
    "no meter {meter} is registered.": "Kein Zähler {meter} ist registriert.",
    "the meter {meter} is already registered; a meter id is used once.":
        "Der Zähler {meter} ist schon registriert; eine Zähler-ID wird nur einmal verwendet.",
    "participant {participant} still has the active meter {meter}; use `pilotchain meters "
    "replace` to swap it.":
        "Teilnehmer {participant} hat noch den aktiven Zähler {meter}; tauschen Sie ihn mit "
        "`pilotchain meters replace`.",
    "the meter {meter} has already been deactivated or replaced.":
        "Der Zähler {meter} wurde schon deaktiviert oder ersetzt.",
    "the meter {meter} cannot end before {earliest} (its start or its newest reading).":
        "Der Zähler {meter} kann nicht vor {earliest} enden (seinem Beginn oder seinem "
        "neuesten Messwert).",
    "{time} is not on a slot boundary.": "{time} liegt nicht auf einer Zeitfenstergrenze.",
    "rates can only change from {earliest} on (after the previous change and the newest "
    "closed slot), not from {start}.":
        "Tarife können sich erst ab {earliest} ändern (nach der vorigen Änderung und dem "
        "neuesten abgeschlossenen Zeitfenster), nicht ab {start}.",
    "the previous period already ends at {previous}; the next must end later than that, not "
    "at {end}.":
        "Der vorige Zeitraum endet schon um {previous}; der nächste muss später enden, nicht "
        "um {end}.",
    "a period cannot end in the future ({end}).":
        "Ein Zeitraum kann nicht in der Zukunft enden ({end}).",
    "there is no closed period {period}.": "Es gibt keinen abgeschlossenen Zeitraum {period}.",
    "the statement of participant {participant} for period {period} is already marked paid.":
        "Die Abrechnung von Teilnehmer {participant} für Zeitraum {period} ist schon als "
        "bezahlt markiert.",
    "the slot length is fixed once the first meter or rates are set.":
        "Die Länge der Zeitfenster steht fest, sobald der erste Zähler oder Tarif gesetzt "
        "ist.",
    "a slot cannot be 0 s long.": "Ein Zeitfenster kann nicht 0 s lang sein.",
    "an id cannot be zero.": "Eine ID kann nicht null sein.",
    "an address cannot be zero.": "Eine Adresse kann nicht null sein.",
    "a participant or home area cannot be zero.":
        "Ein Teilnehmer oder Heimatbereich kann nicht null sein.",
    "slot {index} of the batch is not due until {due}.":
        "Zeitfenster {index} des Stapels ist erst um {due} fällig.",
    "participant {participant} has no meter.": "Teilnehmer {participant} hat keinen Zähler.",
    "{slot} is not the start of a slot.": "{slot} ist nicht der Beginn eines Zeitfensters.",
    "participant {participant} has no registered wallet.":
        "Teilnehmer {participant} hat keine registrierte Wallet.",
    "the wallet {wallet} is already registered to participant {participant}.":
        "Die Wallet {wallet} ist schon Teilnehmer {participant} zugeordnet.",
    "the account {account} is not the Settlement's admin; operator commands sign with the "
    "operator key that deployed it (KEYS_DIR/operator).":
        "Das Konto {account} ist nicht der Administrator des Settlement-Vertrags; Befehle "
        "des Netzbetreibers signieren mit dem Schlüssel des Netzbetreibers, der ihn "
        "bereitgestellt hat (KEYS_DIR/operator).",
    "the Settlement contract reverted with {revert}.":
        "Der Settlement-Vertrag hat mit {revert} abgebrochen.",
}
CATALOGUES: dict[str, dict[str, str]] = {"en": {}, "de": GERMAN | GERMAN_ERRORS}
# What the page's script translates itself: its own sentences only. The API's sentences come
# translated in its answers, so every page need not carry them.
SCRIPT_WORDS: dict[str, dict[str, str]] = {"en": {}, "de": GERMAN}


def translate(lang: str, text: str) -> str:
    """``text`` (English) in ``lang``; itself if no translation is known."""
    return CATALOGUES.get(lang, {}).get(text, text)


def say(lang: str, sentence: str) -> str:
    """An English sentence in ``lang``: a Phrase through its template and values (words of
    ours among them translated too, other values as they are), any other text as a whole."""
    if isinstance(sentence, Phrase):
        return sentence.render(lambda template: translate(lang, template))
    return translate(lang, sentence)
