"""A tqdm progress bar when asked for and installed; the bare iterable otherwise."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class _Silent:
    def __init__(self, iterable: Any) -> None:
        self._it = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self._it)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable[Any] | None, enabled: bool, **kwargs: Any) -> Any:
    """tqdm(iterable, **kwargs) when enabled and installed; else a silent stand-in
    with the same iteration, ``update``, ``set_postfix`` and ``close``."""
    if not enabled:
        return _Silent(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent(iterable)
    return tqdm(iterable, **kwargs)
