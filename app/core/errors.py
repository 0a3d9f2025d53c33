"""The one base for errors a person should read.

Every layer raises a subclass of :class:`UserError` for a mistake in what a person gave it (a spec
field, a data file, a setting, a run id); the CLI, the worker and the UI show those as they are and
anything else as a bug with its type. ``tuners`` is a library of its own and does not import the
studio, so its :class:`~tuners.config.ConfigError` is added to :data:`USER_ERRORS` here instead.
"""

from __future__ import annotations

from tuners.config import ConfigError


class UserError(Exception):
    """Something a person gave is wrong; the message says what and where."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, FileNotFoundError)


def describe(exc: BaseException) -> str:
    """One line for a person: a user error as written, anything else prefixed with its type."""
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: {text}"
