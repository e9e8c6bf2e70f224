"""The exercise-check machinery, and every lesson's checkers against reference/stub/wrong."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import numpy as np
import pytest

from vae_from_scratch.checks import core, messages, values
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG, Case, Checker

# the check machinery every lesson's exercises go through
pytestmark = [pytest.mark.every_lesson]


def _square(x):
    return np.asarray(x) ** 2


@pytest.fixture()
def square_checker():
    checker = Checker("9.1", reference=_square, cases=[Case(np.array([1.0, -2.0, 3.0]))])
    yield checker
    core._REGISTRY.pop(("9.1", "square"), None)


@pytest.fixture(autouse=True)
def _fresh_record():
    core.clear_recorded()
    yield
    core.clear_recorded()


# -- Checker ---------------------------------------------------------------------------------


def test_name_comes_from_the_reference_without_underscores(square_checker):
    assert square_checker.name == "square"
    assert square_checker.lesson == 9
    assert square_checker.label == "Exercise 9.1 (square)"


def test_a_right_answer_passes_and_is_returned(square_checker, capsys):
    def square(x):
        return x * x

    assert square_checker(square) is square
    assert capsys.readouterr().out == "✓ Exercise 9.1 (square): correct.\n"
    assert [r.status for r in core.recorded()] == [PASSED]


def test_a_stub_is_not_done_and_the_reference_is_returned(square_checker, capsys):
    def square(x):
        raise NotImplementedError("Exercise 9.1: implement square")

    assert square_checker(square) is _square
    out = capsys.readouterr().out
    assert out.startswith("○ Exercise 9.1 (square): not done yet.")
    assert out.splitlines()[1] == "  now, so the rest of the notebook runs."  # wrapped at a space
    (result,) = core.recorded()
    assert result.status == NOT_DONE
    assert result.detail == "Exercise 9.1: implement square"


def test_a_wrong_answer_shows_the_case_expected_and_got(square_checker, capsys):
    def square(x):
        return 2 * x

    assert square_checker(square) is _square
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "✗ Exercise 9.1 (square): wrong answer.",
        "    for square(x) with",
        "      x = [ 1., -2.,  3.]",
        "    expected [1., 4., 9.]",
        "    got      [ 2., -4.,  6.]",
        "    3 of 3 entries differ (largest difference 8); first at index [0]: expected",
        "      1, got 2 (rtol=1e-06, atol=1e-08)",
        "  Using the reference implementation from here on, so the rest of the notebook",
        "    runs.",
    ]
    assert core.recorded()[0].status == WRONG


def test_printed_messages_wrap_at_spaces_never_inside_a_word(square_checker, capsys):
    for answer in (lambda x: 2 * x, lambda x: x[10]):
        square_checker(answer)
    out = capsys.readouterr().out
    recorded = "\n".join(r.message for r in core.recorded())
    assert out.split() == recorded.split()  # the same words in the same order, none cut
    assert max(len(line) for line in out.splitlines()) <= messages.WRAP_WIDTH
    assert max(len(line) for line in recorded.splitlines()) > messages.WRAP_WIDTH  # it had to


def test_wrap_message_leaves_arrays_and_long_words_whole():
    prose = "    " + " ".join(["word"] * 30)
    array = "    expected [[" + ", ".join(["0.123456"] * 10) + "],"
    row = "             [" + ", ".join(["0.123456"] * 10) + "]]"
    url = "    see " + "x" * 90
    wrapped = messages.wrap_message("\n".join([prose, array, row, url]), width=40).splitlines()
    assert all(len(line) <= 40 for line in wrapped[:4])
    assert wrapped[0].startswith("    word") and wrapped[1].startswith("      word")
    assert array in wrapped and row in wrapped  # NumPy's layout, as it was
    assert wrapped[-2:] == ["    see", "      " + "x" * 90]  # too long for any line: whole
    assert messages.wrap_message("short\n  lines", width=40) == "short\n  lines"


def test_wrong_shape_and_exceptions_are_wrong(square_checker):
    result = square_checker.run(lambda x: x.sum())
    assert result.status == WRONG
    assert "expected shape (3,), got shape ()" in result.message

    def broken(x):
        return x[10]

    result = square_checker.run(broken)
    assert result.status == WRONG
    assert "raised IndexError: index 10 is out of bounds" in result.message
    assert square_checker.run(None).detail == "expected a function, got None"


def test_run_prints_nothing_and_records_nothing(square_checker, capsys):
    assert square_checker.run(_square).status == PASSED
    assert capsys.readouterr().out == ""
    assert core.recorded() == []


def test_messages_are_deterministic(square_checker):
    class Thing:
        pass

    def weird(x):
        raise ValueError(f"bad {Thing()}")  # the repr holds an address

    first = square_checker.run(weird).message
    assert first == square_checker.run(weird).message
    assert "0x" not in first


def test_tolerances_are_used():
    checker = Checker(
        "9.2", reference=lambda x: x, cases=[Case(1.0)], name="ident", rtol=0, atol=1e-3
    )
    try:
        assert checker.run(lambda x: x + 5e-4).status == PASSED
        assert checker.run(lambda x: x + 2e-3).status == WRONG
    finally:
        core._REGISTRY.pop(("9.2", "ident"))


def test_arguments_are_fresh_copies_for_every_call_and_changing_them_is_wrong():
    seen = []

    def draw(rng, x):
        seen.append(x.copy())
        return rng.normal(size=2) + x

    def draw_in_place(rng, x):
        seen.append(x.copy())
        x += 100.0  # modifying the input must not leak into the next call, and is wrong
        return rng.normal(size=2) + x - 100.0

    checker = Checker("9.3", reference=draw, cases=[Case(np.random.default_rng(0), np.ones(2)),
                                                    Case(np.random.default_rng(1), np.ones(2))])
    try:
        assert checker.run(draw).status == PASSED  # the same random numbers for both
        result = checker.run(draw_in_place)
        assert result.status == WRONG
        assert "changed its argument x in place" in result.message
        assert "expected" not in result.message  # the value itself was right
        assert all((s == 1.0).all() for s in seen)
    finally:
        core._REGISTRY.pop(("9.3", "draw"))


def test_call_adapter_and_custom_compare():
    class Doubler:
        def forward(self, x):
            return 2 * x

    class Tripler:
        def forward(self, x):
            return 3 * x

    checker = Checker(
        "9.4",
        reference=Doubler,
        cases=[Case(np.arange(3.0))],
        name="Doubler",
        call=lambda cls, x: cls().forward(x),
    )
    positive = Checker(
        "9.5",
        reference=lambda x: x,
        cases=[Case(np.arange(3.0))],
        name="anything_positive",
        compare=lambda e, g: None if (g >= 0).all() else "negative entries",
    )
    try:
        assert checker.run(Doubler).status == PASSED
        assert checker.run(Tripler).status == WRONG
        assert positive.run(lambda x: x + 7).status == PASSED
        result = positive.run(lambda x: -x - 1)
        assert result.status == WRONG and result.detail == "negative entries"
    finally:
        core._REGISTRY.pop(("9.4", "Doubler"))
        core._REGISTRY.pop(("9.5", "anything_positive"))


def test_examples_are_labelled_and_not_listed():
    checker = Checker("9.6", reference=_square, cases=[Case(1.0)], name="demo", example=True)
    try:
        assert checker.label == "Example (demo)"
        assert checker not in core.checkers(9)
        assert checker in core.checkers(9, examples=True)
    finally:
        core._REGISTRY.pop(("9.6", "demo"))


def test_bad_definitions_are_refused():
    with pytest.raises(ValueError, match="exercise numbers"):
        Checker("two", reference=_square, cases=[Case(1.0)])
    with pytest.raises(ValueError, match="at least one Case"):
        Checker("9.7", reference=_square, cases=[])
    with pytest.raises(TypeError, match="Case objects"):
        Checker("9.7", reference=_square, cases=[(1.0,)])


# -- comparison and formatting ---------------------------------------------------------------


Pair = namedtuple("Pair", "a b")


@dataclasses.dataclass
class Terms:
    loss: float
    kl: np.ndarray


class FakeTensor:
    """Quacks like a torch tensor: .detach().cpu().numpy()."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.value


@pytest.mark.parametrize(
    "expected, got",
    [
        (1.5, 1.5 + 1e-9),
        (np.float32(0.1), 0.1),
        (np.array([1, 2]), np.array([1.0, 2.0])),
        (np.array([np.nan, 1.0]), np.array([np.nan, 1.0])),
        (np.array([True, False]), np.array([True, False])),
        ((np.ones(2), 3), [np.ones(2), 3]),
        (Pair(1.0, 2.0), (1.0, 2.0)),
        ({"mu": np.zeros(2), "log_var": 1.0}, {"log_var": 1.0, "mu": np.zeros(2)}),
        (Terms(1.0, np.ones(2)), Terms(1.0, np.ones(2))),
        (FakeTensor([1.0, 2.0]), np.array([1.0, 2.0])),
        (None, None),
        ("relu", "relu"),
    ],
)
def test_compare_values_accepts(expected, got):
    assert values.compare_values(expected, got) is None


@pytest.mark.parametrize(
    "expected, got, reason",
    [
        (1.0, 1.1, "off by 0.1"),
        (np.zeros(3), np.zeros((3, 1)), "expected shape (3,), got shape (3, 1)"),
        (np.array([1.0, np.nan]), np.array([1.0, 2.0]), "1 of 2 entries differ"),
        (np.zeros(2), [0.0, 0.0], "got a list; wrap it in np.array"),
        (np.zeros(2), "zeros", "expected a number or array, got str"),
        ((1.0, 2.0), (1.0,), "expected 2 items, got 1"),
        ((1.0, 2.0), (1.0, 2.5), "at [1]: off by 0.5"),
        ({"mu": 1.0}, {"m": 1.0}, "missing key 'mu'; unexpected key 'm'"),
        ({"mu": np.zeros(2)}, {"mu": np.ones(2)}, "at ['mu']: 2 of 2 entries differ"),
        (Terms(1.0, np.ones(2)), Terms(1.0, np.zeros(2)), "at ['kl']: 2 of 2"),
        (Terms(1.0, np.ones(2)), 1.0, "expected a Terms, got float"),
        (None, 0.0, "expected None, got float"),
        ("relu", "tanh", "values differ"),
    ],
)
def test_compare_values_rejects(expected, got, reason):
    mismatch = values.compare_values(expected, got)
    assert mismatch is not None
    assert reason in mismatch.describe()


def test_format_value_small_and_large():
    assert messages.format_value(np.array([[0.5, 1.0], [0.0, 0.25]])) == (
        "[[0.5 , 1.  ],\n [0.  , 0.25]]"
    )
    assert messages.format_value(np.zeros((10, 784), np.float32)) == (
        "<array of shape (10, 784), float32>"
    )
    assert messages.format_value(np.float64(1) / 3) == "0.3333333"
    assert messages.format_value((1, [2.5, True], {"a": None})) == "(1, [2.5, True], {'a': None})"
    assert messages.format_value(np.random.default_rng(0)) == "np.random.Generator"


def test_format_value_ignores_the_learners_print_options():
    with np.printoptions(precision=1, floatmode="fixed"):
        assert messages.format_value(np.array([0.123456])) == "[0.123456]"


# -- every lesson's checkers: reference passes, stub is "not done", a wrong answer is "wrong" --


def _perturb(value):
    """A deliberately wrong version of a result: every number changed, shapes kept."""
    value = messages.to_plain(value)
    if isinstance(value, np.ndarray) or isinstance(value, (int, float, complex, np.number)):
        arr = np.asarray(value)
        if arr.dtype.kind == "b":
            out = ~arr
        elif arr.dtype.kind in "iu":
            out = arr + 1
        else:
            out = arr * 1.5 + 0.25
        return out if isinstance(value, np.ndarray) else out.item()
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_perturb(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_perturb(v) for v in value)
    if isinstance(value, dict):
        return {k: _perturb(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        changes = {f.name: _perturb(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    raise TypeError(f"cannot make a wrong version of a {type(value).__name__}")


# Lessons whose checkers run their cases through PyTorch (the root conftest skips tests
# marked ``torch`` when it is not installed).
_TORCH_LESSONS = {6}


def _lesson_params(plain_functions_only=False):
    params = []
    for c in core.checkers(examples=True):
        if plain_functions_only and c.call is not None:
            continue
        marks = [getattr(pytest.mark, f"lesson{c.lesson:02d}")]
        if c.lesson in _TORCH_LESSONS:
            marks.append(pytest.mark.torch)
        params.append(pytest.param(c, id=f"{c.exercise}-{c.name}", marks=marks))
    return params


@pytest.mark.parametrize("checker", _lesson_params())
def test_checker_passes_its_reference_deterministically(checker):
    first = checker.run(checker.reference)
    assert first.status == PASSED, first.message
    assert checker.run(checker.reference).message == first.message


@pytest.mark.parametrize("checker", _lesson_params())
def test_checker_reports_a_stub_as_not_done(checker):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {checker.exercise}: implement {checker.name}")

    result = checker.run(stub)
    assert result.status == NOT_DONE, result.message
    assert "not done yet" in result.message
    assert result.detail == f"Exercise {checker.exercise}: implement {checker.name}"


@pytest.mark.parametrize("checker", _lesson_params(plain_functions_only=True))
def test_checker_reports_a_wrong_answer_with_expected_and_got(checker):
    # Checkers that run the learner's object through call= are tested in their lesson's file.
    reference = checker.reference

    def wrong(*args, **kwargs):
        return _perturb(reference(*args, **kwargs))

    result = checker.run(wrong)
    assert result.status == WRONG, result.message
    if checker.compare is None:
        assert "\n    expected " in result.message
        assert "\n    got      " in result.message
    assert checker.run(wrong).message == result.message


@pytest.mark.parametrize("checker", _lesson_params())
def test_checker_is_named_like_the_function_the_learner_writes(checker):
    import importlib

    module = importlib.import_module(f"vae_from_scratch.checks.lesson{checker.lesson:02d}")
    assert getattr(module, checker.name, None) is checker, (
        f"the notebook calls check.{checker.name}(...), so lesson{checker.lesson:02d}.py must "
        f"bind this checker to the name {checker.name!r}"
    )


@pytest.mark.parametrize("checker", _lesson_params(plain_functions_only=True))
def test_a_checker_whose_answer_is_a_tuple_names_its_outputs(checker):
    expected = checker._run_on(checker.reference, checker.cases[0])[0]
    if isinstance(expected, tuple) and not hasattr(expected, "_fields"):
        assert checker.outputs is not None, (
            f"{checker.label} returns a tuple: give outputs=(...) so a message names the "
            "wrong one")
        assert len(checker.outputs) == len(expected)
    elif checker.outputs is not None:
        pytest.fail(f"{checker.label} has outputs= but returns a {type(expected).__name__}")


@pytest.mark.parametrize("checker", _lesson_params())
def test_checker_sizes_name_an_axis_of_every_case(checker):
    for case in checker.cases:
        assert set(checker._sizes(case)) == set(checker.sizes), (checker, case)
