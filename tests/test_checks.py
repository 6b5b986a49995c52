"""Every notebook's check-yourself questions and exercises answer a right answer "right" and a wrong
one "wrong", and the notebook shows them."""

import importlib
from pathlib import Path

import pytest

from helpers.checks import Exercise, Question

ROOT = Path(__file__).parent.parent
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
MODULES = sorted(p.stem for p in (ROOT / "helpers" / "checks").glob("nb[0-9][0-9].py"))


@pytest.mark.parametrize("name", MODULES)
def test_questions_and_exercises_tell_right_from_wrong(name: str) -> None:
    module = importlib.import_module(f"helpers.checks.{name}")
    questions: list[Question] = module.QUESTIONS
    exercises: list[Exercise] = module.EXERCISES
    assert len(questions) >= 2 and len(exercises) >= 3
    for question in questions:
        assert question.check(question.answer).correct
        assert not any(question.check(o).correct for o in question.options if o != question.answer)
    for exercise in exercises:
        verdicts = {correct for _, _, correct in exercise.examples}
        assert verdicts == {True, False}, f"{exercise.prompt[:40]}: needs a right and a wrong example"
        for args, context, correct in exercise.examples:
            assert exercise.check(*args, **context).correct is correct, (exercise.prompt[:40], args)


@pytest.mark.parametrize("name", MODULES)
def test_the_notebook_shows_its_questions_and_exercises(name: str) -> None:
    (source,) = [p for p in SOURCES if p.name.startswith(name[2:4] + "_")]
    text = source.read_text()
    module = importlib.import_module(f"helpers.checks.{name}")
    assert f"checks import {name}" in text
    for number in range(len(module.QUESTIONS)):
        assert f"{name}.QUESTIONS[{number}]" in text
    for number in range(len(module.EXERCISES)):
        assert f"{name}.EXERCISES[{number}].check(" in text
