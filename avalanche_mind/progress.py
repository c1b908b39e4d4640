"""Progress bars for the teacher and distillation phases (tqdm), silenced by ``verbose=False``."""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


class _PhaseBar:
    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="epoch", leave=False) if enabled else None

    def update(self, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_bar(strategy: Any, total: int, desc: str) -> _PhaseBar:
    """A per-epoch bar showing loss and learning rate, if the strategy is verbose."""
    return _PhaseBar(total, desc, bool(getattr(strategy, "verbose", False)))
