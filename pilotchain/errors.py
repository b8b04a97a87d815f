"""The root of every error PilotChain raises on purpose.

Messages are full sentences built where the error is raised; entry points catch
``PilotChainError`` and print ``str(error)`` without a traceback. A sentence that a user may
read in another language (the portal answers German too) is raised as its English template
and its values, ``BadRequest("There is no closed billing period {period}.", period=7)``: the
error's ``str`` is the English sentence all the same, and ``error.phrase`` keeps the two apart
for an edge to translate the template and fill in the values.
"""

from __future__ import annotations

from collections.abc import Callable


class Phrase(str):
    """English text (a sentence, a clause or a word) that remembers its template and values.

    It is the English text itself, so it goes wherever a ``str`` goes. :meth:`render` shows
    it through a translation of templates: a value that is itself a Phrase (a word of ours
    such as "participant id", a clause such as "Reading the bill") is translated too; any
    other value (an address, a number, what a user typed) is shown as it is."""

    template: str
    values: dict[str, object]

    def __new__(cls, template: str, /, **values: object) -> Phrase:
        phrase = super().__new__(cls, template.format(**values) if values else template)
        phrase.template = template
        phrase.values = values
        return phrase

    def render(self, translate: Callable[[str], str]) -> str:
        """The text with its template (and those of its Phrase values) through
        ``translate``."""
        if not self.values:
            return translate(self.template)
        return translate(self.template).format(**{
            name: value.render(translate) if isinstance(value, Phrase) else value
            for name, value in self.values.items()})


class PilotChainError(Exception):
    """Something a user can act on went wrong; the message says what and what to do.

    ``message`` is the sentence, or its template when ``values`` are given (see
    :class:`Phrase`); ``str(error)`` is the English sentence either way."""

    def __init__(self, message: object = "", /, **values: object) -> None:
        if isinstance(message, Phrase) and not values:
            self.phrase = message
        else:
            self.phrase = Phrase(str(message), **values)
        super().__init__(str(self.phrase))


class ConfigError(PilotChainError):
    """A setting is missing or has a value that cannot be used."""


class ChainError(PilotChainError):
    """The chain could not be reached or refused what was asked of it."""


class NetworkError(PilotChainError):
    """The local native network could not be started, stopped or inspected."""


class TradeFormatError(PilotChainError):
    """A trade or a log of the Settlement contract does not fit the settlement format."""
