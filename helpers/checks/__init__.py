"""Check-yourself questions and exercises that answer right or wrong, and say why.

Each notebook's questions and exercises live in a module here (``nb01`` for notebook 01, ...)
as two lists, ``QUESTIONS`` and ``EXERCISES``, so that the tests can ask every one of them a right
and a wrong answer. A notebook shows a question as a widget (``QUESTIONS[0]`` in a cell) and
checks an exercise with ``EXERCISES[0].check(answer, ...)``; the worked solution stays in the
notebook, in a ``<details>`` block the reader opens.

>>> q = Question("2 + 2?", ["3", "4"], answer="4", why="Two pairs make four.")
>>> q.check("4").correct, q.check("3").correct
(True, False)
>>> e = Exercise("Count the workers.", lambda n, workers=4: Feedback.of(n == workers, f"{workers} workers."),
...              examples=[((4,), {}, True), ((3,), {}, False)])
>>> print(e.check(3))
❌ Not quite. 4 workers.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Exercise", "Feedback", "Question"]


@dataclass(frozen=True)
class Feedback:
    """Right or wrong, and why."""

    correct: bool
    why: str

    @classmethod
    def of(cls, correct: bool, why: str) -> Feedback:
        return cls(bool(correct), why)

    def __str__(self) -> str:
        return f"{'✅ Right.' if self.correct else '❌ Not quite.'} {self.why}"

    def _repr_markdown_(self) -> str:
        return f"**{'✅ Right.' if self.correct else '❌ Not quite.'}** {self.why}"


@dataclass
class Question:
    """A multiple-choice question; shown in a notebook as radio buttons and a Check button."""

    prompt: str
    options: Sequence[str]
    answer: str
    why: str  #: the explanation, shown with either verdict
    hints: dict[str, str] = field(default_factory=dict)  #: what a wrong option's choice suggests

    def __post_init__(self) -> None:
        if self.answer not in self.options:
            raise ValueError(f"the answer {self.answer!r} is not one of the options {list(self.options)}")

    def check(self, choice: str) -> Feedback:
        """Feedback for choosing ``choice``."""
        if choice not in self.options:
            raise ValueError(f"{choice!r} is not one of the options {list(self.options)}")
        hint = "" if choice == self.answer else self.hints.get(choice, "")
        return Feedback.of(choice == self.answer, f"{hint} {self.why}".strip())

    def widget(self) -> Any:
        import ipywidgets as widgets

        choices = widgets.RadioButtons(
            options=list(self.options), value=None, layout={"width": "max-content"}
        )
        button = widgets.Button(description="Check", button_style="primary")
        result = widgets.HTML()

        def on_click(_: Any) -> None:
            if choices.value is None:
                result.value = "<i>Pick an answer first.</i>"
                return
            feedback = self.check(choices.value)
            result.value = html.escape(str(feedback))

        button.on_click(on_click)
        return widgets.VBox([widgets.HTML(f"<b>{html.escape(self.prompt)}</b>"), choices, button, result])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget()._repr_mimebundle_(**kwargs)
        options = "\n".join(f"- {option}" for option in self.options)
        bundle.setdefault("text/markdown", f"**{self.prompt}**\n\n{options}")  # for a saved notebook
        return bundle


@dataclass
class Exercise:
    """A task whose answer the reader computes in a cell, then checks with :meth:`check`.

    ``check_answer(answer, **context)`` returns :class:`Feedback`; ``context`` carries what the
    right answer depends on (a trace measured in the notebook, say). ``examples`` holds
    ``(args, context, correct)`` triples: at least one right and one wrong answer, which the tests
    put to ``check`` and the verdict must match."""

    prompt: str
    check_answer: Callable[..., Feedback]
    examples: Sequence[tuple[tuple[Any, ...], dict[str, Any], bool]] = ()

    def check(self, *answer: Any, **context: Any) -> Feedback:
        return self.check_answer(*answer, **context)

    def __str__(self) -> str:
        return self.prompt
