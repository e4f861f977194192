"""The promote gate's tiny expression grammar: parsed, never evaluated by Python."""

from __future__ import annotations

import pytest

from eventml.errors import InputError
from eventml.learning.promote import Gate, route_spec
from eventml.serving.spec import RouteSpec

METRICS = {"auc": 0.80, "served_auc": 0.75, "psi": 0.1, "rmse": 0.5, "served_rmse": 0.6}


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("auc >= served_auc + 0.005", True),
        ("auc >= served_auc + 0.05", True),
        ("auc > served_auc + 0.06", False),
        ("auc - served_auc * 2 > -0.71", True),  # * binds tighter than -
        ("(auc - served_auc) * 2 > 0.09", True),
        ("rmse <= served_rmse and psi < 0.25", True),
        ("rmse <= served_rmse and psi < 0.05", False),
        ("-psi == -0.1", True),
        ("auc / served_auc != 1", True),
        ("1e-3 < .5", True),
    ],
)
def test_gate_evaluates(text: str, ok: bool) -> None:
    assert Gate.parse(text).check(METRICS)[0] is ok


def test_gate_lines_say_each_comparison() -> None:
    ok, lines = Gate.parse("auc >= served_auc + 0.005 and psi < 0.05").check(METRICS)
    assert not ok
    assert lines == [
        "auc >= served_auc + 0.005: 0.8 >= 0.755 passed",
        "psi < 0.05: 0.1 < 0.05 FAILED",
    ]
    assert Gate.parse("auc > 0").check({"auc": float("nan")}) == (
        False,
        ["auc > 0: nan > 0 FAILED"],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "__import__('os').system('x')",
            "expected a number, a metric name or one of < <= > >= == != + - * / ( ), "
            "got \"'os').system('x')\" (--require at column 12)",
        ),
        ("auc", 'expected a comparison (< <= > >= == !=), got "the end" (--require)'),
        ("auc >= 1 or psi < 2", "expected 'and' or the end, got \"or\" (--require)"),
        ("auc >= ", "expected more after 'auc >= ', got the end (--require)"),
        (
            "auc >= 1;",
            'expected a number, a metric name or one of < <= > >= == != + - * / ( ), got ";" (--require at column 9)',
        ),
        ("auc >= (1", "expected more after 'auc >= (1', got the end (--require)"),
        ("auc >= 1 < 2", "expected 'and' or the end, got \"<\" (--require)"),
        ("", "expected a gate expression, got an empty one (--require)"),
    ],
)
def test_gate_refuses_what_is_not_the_grammar(text: str, message: str) -> None:
    with pytest.raises(InputError) as exc:
        Gate.parse(text)
    assert str(exc.value) == message


def test_gate_errors_at_check_time() -> None:
    with pytest.raises(InputError) as exc:
        Gate.parse("auc / (psi - 0.1) > 1").check(METRICS)
    assert str(exc.value) == "expected a non-zero divisor, got 0 (--require)"
    with pytest.raises(InputError) as exc:
        Gate.parse("__import__ > 1").check(METRICS)  # a name is only ever a metric
    assert str(exc.value).startswith("expected a replay metric, got '__import__'; known: ")
    with pytest.raises(InputError) as exc:
        Gate.parse("f1 > 0.5").check(METRICS)
    assert str(exc.value) == (
        "expected a replay metric, got 'f1'; known: auc, psi, rmse, served_auc, served_rmse (--require)"
    )


def test_route_specs_for_each_promotion() -> None:
    assert route_spec("champion", "m:2", "m:1", "e") == RouteSpec(champion="m:2")
    assert route_spec("shadow", "m:2", "m:1", "e") == RouteSpec(champion="m:1", shadow=["m:2"])
    assert route_spec("canary:5", "m:2", "m:1", "e") == RouteSpec(
        champion="m:1", split={"m:1": 95.0, "m:2": 5.0}, decider="split"
    )
    cases = {
        ("canary:0", "m:1"): 'expected canary:PCT with 0 < PCT < 100, got "canary:0"',
        ("canary:x", "m:1"): 'expected canary:PCT with 0 < PCT < 100, got "canary:x"',
        ("blue", "m:1"): 'expected --as shadow, canary:PCT or champion, got "blue"',
        (
            "shadow",
            None,
        ): "expected a current champion of endpoint 'e' for --as shadow, got no route",
        ("canary:10", "m:2"): "expected a candidate other than the champion m:2 for a canary",
    }
    for (as_, champion), message in cases.items():
        with pytest.raises(InputError) as exc:
            route_spec(as_, "m:2", champion, "e")
        assert str(exc.value) == message
