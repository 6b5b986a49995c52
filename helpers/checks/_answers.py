"""What the exercise checks of notebooks 00, 04, 05 and 06 share."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from . import Feedback

__all__ = ["answered", "is_number"]


def is_number(answer: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer)


def answered(check: Callable[..., Feedback]) -> Callable[..., Feedback]:
    """Say what to do when the reader runs the check before replacing ``answer = None``."""

    @functools.wraps(check)
    def wrapper(answer: Any = None, *more: Any, **context: Any) -> Feedback:
        if answer is None:
            return Feedback.of(False, "Replace None with your answer, then run this cell again.")
        return check(answer, *more, **context)

    return wrapper
