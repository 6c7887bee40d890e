"""Options and helpers shared by several subcommands (the only place they are defined)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from geoseg.errors import GeosegError

__all__ = ["fail_on_geoseg_error", "parse_bands"]

F = TypeVar("F", bound=Callable[..., Any])


def parse_bands(value: str | None) -> tuple[int, ...] | None:
    """Parse a ``--bands 3,2,1`` option into 1-based band indexes (``None`` = all bands)."""
    if value is None or value == "":
        return None
    try:
        bands = tuple(int(v) for v in value.split(","))
    except ValueError as err:
        raise click.BadParameter(
            f"{value!r}: give 1-based band numbers separated by commas, e.g. 3,2,1"
        ) from err
    if any(b < 1 for b in bands):
        raise click.BadParameter(f"{value!r}: band numbers start at 1")
    return bands


def fail_on_geoseg_error(func: F) -> F:
    """Turn a :class:`GeosegError` into a clean ``Error: ...`` message and exit code 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeosegError as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]
