"""Settings declared once: name, type, default and meaning, in the module that uses them.

Each service lists its settings as :class:`Setting` rows in a :class:`SettingsGroup`; its
typed settings class reads them through :meth:`SettingsGroup.read` at the entry point. The same rows
give ``pilotchain config`` (the effective values, secrets masked), ``docs/settings.md`` and
``.env.example``, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

from pilotchain.errors import ConfigError


def _project_root() -> Path:
    """The checkout (editable install), else PILOTCHAIN_HOME or the working directory.

    In the Compose image the package lives in site-packages and the project folder is
    mounted elsewhere, so relative paths resolve against the working directory there.
    """
    if home := os.environ.get("PILOTCHAIN_HOME"):
        return Path(home).resolve()
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


PROJECT_ROOT = _project_root()


def local_url(host: str, port: int) -> str:
    """Where a process on this machine reaches a port bound to ``host``: loopback for a
    wildcard address (IPv4 or IPv6), an IPv6 address in brackets."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def load_environment(env_file: Path | None = None) -> dict[str, str]:
    """Merge ``.env`` (if present) under the process environment, which wins."""
    path = env_file if env_file is not None else PROJECT_ROOT / ".env"
    values: dict[str, str] = {}
    if path.is_file():
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    values.update(os.environ)
    return values


Kind = Literal["str", "int", "float", "bool", "path", "list", "optional", "optional_path"]


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read, its default and what it means.

    ``default`` is the value used when the variable is unset or empty; ``None`` with
    ``default_text`` means the default is derived from other settings, and ``default_text``
    says how. ``check(value, env)`` validates or converts the value read (raising
    ConfigError), with the whole environment at hand for settings that depend on others.
    """

    name: str
    field: str
    kind: Kind
    default: Any
    help: str
    minimum: float | None = None
    secret: bool = False
    default_text: str | None = None
    check: Callable[[Any, Mapping[str, str]], Any] | None = None

    def read(self, env: Mapping[str, str]) -> Any:
        """The typed value of this setting in ``env``; ConfigError names the setting."""
        raw = env.get(self.name, "").strip()
        value = self._parse(raw) if raw else self._unset()
        return self.check(value, env) if self.check is not None else value

    def _unset(self) -> Any:
        if self.kind in ("path", "optional_path") and self.default is not None:
            return _absolute(Path(self.default))
        return self.default

    def _parse(self, raw: str) -> Any:
        if self.kind in ("str", "optional"):
            return raw
        if self.kind in ("path", "optional_path"):
            return _absolute(Path(raw))
        if self.kind == "list":
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if self.kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{self.name} must be true or false, not {raw!r}.")
        number: int | float
        try:
            number = int(raw.replace("_", "")) if self.kind == "int" else float(raw)
        except ValueError:
            what = "a whole number" if self.kind == "int" else "a number"
            raise ConfigError(f"{self.name} must be {what}, not {raw!r}.") from None
        if self.minimum is not None and number < self.minimum:
            minimum = int(self.minimum) if self.kind == "int" else self.minimum
            raise ConfigError(f"{self.name} must be at least {minimum}, not {number}.")
        return number

    @property
    def shown_default(self) -> str:
        """The default as the documentation shows it."""
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "(unset)"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ",".join(self.default) or "(none)"
        if isinstance(self.default, Path):
            return _relative(self.default)
        return str(self.default)

    def to_env(self, value: Any) -> str:
        """The variable's value that reads back as ``value``."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)


@dataclass(frozen=True)
class SettingsGroup:
    """The settings of one service, in the order the documentation lists them."""

    title: str
    anchor: str
    intro: str
    settings: tuple[Setting, ...]

    def read(self, env: Mapping[str, str]) -> dict[str, Any]:
        """Every setting of the group as ``{field: typed value}``."""
        return {setting.field: setting.read(env) for setting in self.settings}

    def to_env(self, values: object) -> dict[str, str]:
        """The environment that reads back as the fields of ``values`` (a settings object)."""
        return {s.name: s.to_env(getattr(values, s.field)) for s in self.settings}

    def names(self) -> set[str]:
        return {setting.name for setting in self.settings}


@dataclass(frozen=True)
class Effective:
    """One setting's value as a process would see it, for ``pilotchain config``."""

    setting: Setting
    shown: str
    source: str  # "default", "environment or .env", or "invalid"
    problem: str | None = None


def effective(groups: Iterable[SettingsGroup], env: Mapping[str, str]
              ) -> list[tuple[SettingsGroup, list[Effective]]]:
    """Each group's settings with their effective values; secrets masked, errors kept."""
    report = []
    for group in groups:
        rows = []
        for setting in group.settings:
            given = env.get(setting.name, "").strip() != ""
            try:
                value = setting.read(env)
            except ConfigError as error:
                rows.append(Effective(setting, env.get(setting.name, ""), "invalid", str(error)))
                continue
            if setting.secret and value:
                shown = "******** (set)"
            elif not given:
                shown = setting.shown_default
            else:
                shown = _relative(value) if isinstance(value, Path) else setting.to_env(value)
            rows.append(Effective(setting, shown, "set" if given else "default"))
        report.append((group, rows))
    return report


def markdown(groups: Iterable[SettingsGroup], preamble: str) -> str:
    """The settings reference (``docs/settings.md``): one table per group."""
    out = [preamble.rstrip(), ""]
    for group in groups:
        out += [f'<a id="{group.anchor}"></a>', "", f"## {group.title}", "", group.intro, "",
                "| Setting | Default | Meaning |", "| --- | --- | --- |"]
        for s in group.settings:
            out.append(f"| `{s.name}` | {_cell(s.shown_default, code=True)} | "
                       f"{_cell(s.help)} |")
        out.append("")
    return "\n".join(out)


def env_example(groups: Iterable[SettingsGroup], preamble: str) -> str:
    """``.env.example``: every setting commented out at its default."""
    out = [f"# {line}".rstrip() for line in preamble.strip().splitlines()]
    for group in groups:
        out += ["", f"# --- {group.title} " + "-" * max(3, 80 - len(group.title))]
        for s in group.settings:
            out.append(f"# {s.help}")
            value = "" if s.default is None or s.secret else s.shown_default
            if s.default_text is not None and s.default is None:
                value = ""
            out.append(f"#{s.name}={value}")
    return "\n".join(out) + "\n"


def _absolute(path: Path) -> Path:
    """Relative paths are relative to the project, wherever the command runs."""
    return path if path.is_absolute() else PROJECT_ROOT / path


def _cell(text: str, *, code: bool = False) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    if code and not text.startswith("("):
        return f"`{text}`"
    return text


def _relative(path: Path) -> str:
    """A path under the project shown relative to it, so docs do not name a checkout."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
