"""The project's typed errors and the one policy every entry point applies to them.

A ``UserError`` is a mistake the user can fix (a setting, a path, a checkpoint that does not fit
the data); entry points wrapped in ``user_errors`` print it as one ``error: ...`` line and exit
with status 1, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake the user can fix; the message says what to change."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work; raised before any data work or training."""


class ProvenanceError(UserError, ValueError):
    """A checkpoint used with a tokeniser or data split other than the ones it was trained with."""


class CheckpointError(UserError, FileNotFoundError):
    """A checkpoint (or what it needs beside it) is missing or was not written by musicgen."""


def user_errors(fn: F) -> F:
    """Wrap an entry point's task function: a ``UserError`` becomes one ``error: ...`` line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise SystemExit(f"error: {e}") from None

    return wrapper  # type: ignore[return-value]
