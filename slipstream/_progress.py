"""Progress bars for long work (tqdm), and a no-op stand-in when they are off."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(total: int | None, desc: str, *, unit: str = "it", enabled: bool = True,
                 unit_scale: bool = False) -> Any:
    """A tqdm bar showing rate and ETA, or a no-op object when ``enabled`` is false."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, smoothing=0.1,
                dynamic_ncols=True)
