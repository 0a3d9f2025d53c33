"""The one base for errors a person should read.

Every layer raises a subclass of :class:`UserError` for a mistake in what a person gave it (a spec
field, a data file, a setting, a run id); the CLI, the worker and the UI show those as they are and
anything else as a bug with its type. ``tuners`` is a library of its own and does not import the
studio, so its :class:`~tuners.config.ConfigError` counts as a user error here too.

``tuners`` imports torch (seconds), and most ``tunestudio`` commands never train: so this module does
not import it. :func:`is_user_error` finds ``ConfigError`` among the loaded modules (an error of that
type can only exist once ``tuners.config`` is loaded), and :data:`USER_ERRORS`, the tuple for an
``except`` clause, is built on first use.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """Something a person gave is wrong; the message says what and where."""


# User errors that are ours or Python's; the tuners one is found by is_user_error / USER_ERRORS.
_OWN_USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)
_TUNERS_CONFIG = "tuners.config"


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is meant for a person, by type, without importing ``tuners`` (nor torch)."""
    if isinstance(exc, _OWN_USER_ERRORS):
        return True
    config = sys.modules.get(_TUNERS_CONFIG)
    return config is not None and isinstance(exc, config.ConfigError)


def __getattr__(name: str) -> tuple[type[BaseException], ...]:
    """``USER_ERRORS``: every user error type, for ``except USER_ERRORS:`` (imports ``tuners`` once)."""
    if name == "USER_ERRORS":
        from tuners.config import ConfigError

        return (*_OWN_USER_ERRORS, ConfigError)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe(exc: BaseException) -> str:
    """One line for a person: a user error as written, anything else prefixed with its type."""
    text = str(exc).strip() or type(exc).__name__
    return text if is_user_error(exc) else f"{type(exc).__name__}: {text}"
