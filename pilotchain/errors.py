"""The root of every error PilotChain raises on purpose.

Messages are full sentences built where the error is raised; entry points catch
``PilotChainError`` and print ``str(error)`` without a traceback.
"""


class PilotChainError(Exception):
    """Something a user can act on went wrong; the message says what and what to do."""


class ConfigError(PilotChainError):
    """A setting is missing or has a value that cannot be used."""


class ChainError(PilotChainError):
    """The chain could not be reached or refused what was asked of it."""


class NetworkError(PilotChainError):
    """The local native network could not be started, stopped or inspected."""


class TradeFormatError(PilotChainError):
    """A trade or a log of the Settlement contract does not fit the settlement format."""
