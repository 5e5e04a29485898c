"""The real ``internbootcamp`` package, when installed: its bootcamp classes and their scores.

Only classes the package itself defines, exported at its top level, named ``<Name>bootcamp``
(not the base) and with a ``verify_score`` are ever looked up (case-insensitively). A call passes
every option of the convention explicitly, so the package scores in the same convention as the
built-ins whatever its own defaults are.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from llmctl.core.rewards.bootcamp.score import Convention


@functools.cache
def package_classes() -> dict[str, type]:
    """``{lowercase class name: class}``; empty when the package is not installed."""
    try:
        import internbootcamp
    except ImportError:
        return {}
    out = {}
    for attr, obj in vars(internbootcamp).items():
        if (isinstance(obj, type) and attr.lower().endswith("bootcamp") and not attr.lower().startswith("base")
                and getattr(obj, "__module__", "").split(".")[0] == "internbootcamp"
                and callable(getattr(obj, "verify_score", None))):
            out[attr.lower()] = obj
    return out


def package_class(name: str) -> type | None:
    """The package's ``<name>bootcamp`` class, or None."""
    return package_classes().get(name.lower() + "bootcamp")


def package_score(cls: Any, response: str, identity: dict, conv: Convention) -> float:
    """``cls.verify_score`` in convention ``conv``, as a float in [0, 1] (NaN reads as 0)."""
    value = float(cls.verify_score(response, identity, format_score=conv.format_score,
                                   short_penalty=conv.short_penalty, short_threshold=conv.short_threshold,
                                   format_penalty=conv.format_penalty))
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
