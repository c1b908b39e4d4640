"""``--set FIELD=VALUE`` on a preset: parsing the value, applying it, and checking the result.

Values are Python literals (``4``, ``[10, 20]``, ``0.05``), coerced to the field's
type; ``benchmark_kwargs.K=V`` and ``model_kwargs.K=V`` reach into the nested
settings; MIND's own settings are checked by :class:`~avalanche_mind.core.config.MINDConfig`.
"""
from __future__ import annotations

import ast
import dataclasses
import math
from typing import Any, Dict, Sequence

from avalanche_mind.core.config import SETTINGS, MINDConfig
from avalanche_mind.runner.presets import RUNNER_NAMES, Preset


def _coerce(current: Any, text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word: a string
    if isinstance(current, tuple) and isinstance(value, (list, tuple, int)):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def with_overrides(preset: Preset, assignments: Sequence[str]) -> Preset:
    """``preset`` with ``field=value`` assignments applied (``benchmark_kwargs.key=value`` too).

    A MIND setting (MINDConfig's name, or ``batch_size``/``eval_batch_size``) goes into ``Preset.mind``."""
    changes: Dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(Preset)} - {"name", "mind"}
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects field=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if "." in key:
            outer, inner = key.split(".", 1)
            if outer not in ("benchmark_kwargs", "model_kwargs", "mind_kwargs"):
                raise ValueError(
                    f"only benchmark_kwargs.<key>, model_kwargs.<key> and mind_kwargs.<key> can be nested, got {key!r}"
                )
            mapping = dict(changes.get(outer, getattr(preset, outer)))
            mapping[inner] = _coerce(mapping.get(inner), text)
            changes[outer] = mapping
        elif key in names:
            changes[key] = _coerce(getattr(preset, key), text)
        elif RUNNER_NAMES.get(key, key) in SETTINGS:
            setting = RUNNER_NAMES.get(key, key)
            mind = dict(changes.get("mind", preset.mind))
            mind[setting] = _coerce(preset.setting(setting), text)
            changes["mind"] = mind
        else:
            raise ValueError(f"unknown preset field {key!r}; fields: {', '.join(sorted(names))}, and MIND's "
                             f"settings: {', '.join(SETTINGS)}")
    return dataclasses.replace(preset, **changes) if changes else preset


_OPTIONAL_NUMBERS = {"Optional[float]": 0.0, "Optional[int]": 0}
"""Optional fields by annotation, checked like the number they hold when set (None keeps the default)."""


def check_overrides(base: Preset, preset: Preset) -> None:
    """ValueError naming the ``--set`` field whose value has the wrong type, or is not finite.

    MIND's settings are checked by MINDConfig itself, the other fields by the type of the value they replace."""
    for key, new in preset.mind.items():
        try:
            MINDConfig(n_experiences=1, **{key: new})
        except ValueError as error:
            raise ValueError(f"--set {key}={new!r}: {error} (the preset has {base.setting(key)!r})") from None
    for f in dataclasses.fields(Preset):
        if f.name == "mind":
            continue
        old, new = getattr(base, f.name), getattr(preset, f.name)
        if new == old and type(new) is type(old):
            continue
        like = _OPTIONAL_NUMBERS.get(f.type, old) if old is None else old
        if new is None and f.type in _OPTIONAL_NUMBERS:
            continue
        if isinstance(like, bool):
            ok, kind = isinstance(new, bool), "True or False"
        elif isinstance(like, int):
            ok, kind = isinstance(new, int) and not isinstance(new, bool), "an integer"
        elif isinstance(like, float):
            ok = isinstance(new, (int, float)) and not isinstance(new, bool) and math.isfinite(new)
            kind = "a finite number"
        elif isinstance(like, tuple) and all(isinstance(v, int) for v in like):
            ok = isinstance(new, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in new)
            kind = "integers such as 35 or (70, 90)"
        elif isinstance(like, str):
            ok, kind = isinstance(new, str), "a string"
        else:
            continue
        if not ok:
            raise ValueError(f"--set {f.name}={new!r}: {f.name} must be {kind} (the preset has {old!r})")
