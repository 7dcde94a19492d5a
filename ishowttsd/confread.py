"""Typed reading of TOML tables, where every error names the file and the key to fix.

Each settings section (core, F5, chat, watchdog, ...) parses its own table with a
:class:`Table`; unknown keys are errors too, since a misspelt key silently ignored is
a setting the streamer believes is on.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem: ``file`` and ``key`` say where, ``problem`` says what."""

    def __init__(self, file: Path | None, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = str(file) if file is not None else "<defaults>"
        super().__init__(f"{where}: {key}: {problem}")


def _typename(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


class Table:
    """A TOML table being read: typed getters, defaults, and unknown-key detection."""

    def __init__(self, data: Mapping[str, Any], path: str, file: Path | None) -> None:
        self._data = dict(data)
        self._path = path
        self.file = file
        self._seen: set[str] = set()

    # -- helpers -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """The dotted name of ``name`` in this table, as written in error messages."""
        return f"{self._path}.{name}" if self._path else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def has(self, name: str) -> bool:
        return name in self._data

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        return self._data.get(name, default)

    def resolve_path(self, value: str) -> Path:
        """Paths in a config file are relative to the file's own folder."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self.file is not None:
            p = self.file.parent / p
        return p

    # -- typed getters ---------------------------------------------------------------------
    def string(self, name: str, default: str) -> str:
        v = self._get(name, default)
        if not isinstance(v, str):
            raise self.error(name, f"expected a string, got {_typename(v)} {v!r}")
        return v

    def opt_str(self, name: str) -> str | None:
        v = self._get(name, None)
        if v is None:
            return None
        if not isinstance(v, str):
            raise self.error(name, f"expected a string, got {_typename(v)} {v!r}")
        return v

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        v = self.string(name, default)
        if v not in choices:
            raise self.error(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")
        return v

    def flag(self, name: str, default: bool) -> bool:
        v = self._get(name, default)
        if not isinstance(v, bool):
            raise self.error(name, f"expected true or false, got {_typename(v)} {v!r}")
        return v

    def integer(self, name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(name, f"expected an integer, got {_typename(v)} {v!r}")
        self._check_range(name, v, min, max)
        return v

    def number(
        self, name: str, default: float, *, min: float | None = None, max: float | None = None
    ) -> float:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(name, f"expected a number, got {_typename(v)} {v!r}")
        self._check_range(name, float(v), min, max)
        return float(v)

    def opt_float(self, name: str, *, min: float | None = None, max: float | None = None) -> float | None:
        if self._get(name, None) is None:
            return None
        return self.number(name, 0.0, min=min, max=max)

    def opt_int(self, name: str, *, min: int | None = None, max: int | None = None) -> int | None:
        if self._get(name, None) is None:
            return None
        return self.integer(name, 0, min=min, max=max)

    def str_list(self, name: str, default: Sequence[str]) -> tuple[str, ...]:
        v = self._get(name, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.error(name, f"expected an array of strings, got {v!r}")
        return tuple(v)

    def path(self, name: str, default: Path | None) -> Path | None:
        v = self._get(name, None)
        if v is None:
            return default
        if not isinstance(v, str) or not v:
            raise self.error(name, f"expected a path string, got {_typename(v)} {v!r}")
        return self.resolve_path(v)

    def str_map(self, name: str) -> dict[str, str]:
        v = self._get(name, {})
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise self.error(name, "expected a table of strings")
        return {str(k): str(x) for k, x in v.items()}

    def table(self, name: str) -> Table:
        v = self._get(name, {})
        if not isinstance(v, dict):
            raise self.error(name, f"expected a table, got {_typename(v)}")
        return Table(v, self.key(name), self.file)

    def tables(self, name: str) -> list[Table]:
        """An array of tables (``[[name]]``)."""
        v = self._get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self.error(name, "expected an array of tables ([[" + name + "]])")
        return [Table(x, f"{self.key(name)}[{i}]", self.file) for i, x in enumerate(v)]

    def raw(self, name: str, default: T) -> Any:
        """An untyped value, for sections that validate a value's shape themselves."""
        return self._get(name, default)

    def finish(self) -> None:
        """Fail on any key that no getter asked for (typos, keys of another version)."""
        for k in self._data:
            if k not in self._seen:
                hint = difflib.get_close_matches(k, sorted(self._seen), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.error(k, f"unknown key{extra}")

    def _check_range(self, name: str, v: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and v < lo:
            raise self.error(name, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.error(name, f"must be <= {hi}, got {v}")
