"""Property-based checks of spec validation: every generated spec is either accepted, and then
round-trips through TOML, or refused with a one-line SpecError. Nothing else escapes."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from groksweep import SpecError, Sweep
from groksweep.spec import declared_params
from groksweep.tasks import get_task

DECLARED = declared_params(get_task("linear"))
NAMES = sorted(DECLARED)

values = st.one_of(
    st.integers(-5, 5000),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["gd", "adam", "sgd", "float64", "auto", "spectral", ""]),
    st.booleans(),
)
names = st.one_of(st.sampled_from(NAMES), st.text("abcdegilmnoprstu_", min_size=1, max_size=8))
specs = st.fixed_dictionaries(
    {"task": st.sampled_from(["linear", "linaer"])},
    optional={
        "params": st.dictionaries(names, values, max_size=4),
        "axes": st.dictionaries(names, st.lists(values, max_size=3), max_size=3),
        "steps": st.one_of(st.integers(-2, 50), st.floats(allow_nan=True, width=32)),
        "log_points": st.integers(-2, 20),
        "eps": st.one_of(st.lists(st.floats(-1, 1, width=32), max_size=3), st.floats(width=32)),
    },
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_specs_are_accepted_and_round_trip_or_refused_in_one_line(spec):
    try:
        sweep = Sweep.from_dict(spec)
    except SpecError as err:
        message = str(err)
        assert message and "\n" not in message
        return
    assert Sweep.from_dict(__import__("tomllib").loads(sweep.to_toml())) == sweep
    for run in sweep.runs():
        assert run["n_train"] >= 1 and run["lr"] > 0 and run["gamma"] >= 0
        assert all(math.isfinite(v) for v in run.values() if isinstance(v, (int, float)))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["lr", "alpha", "lam"]),
    st.floats(max_value=0, allow_nan=False, allow_infinity=False),
)
def test_non_positive_rates_and_scales_are_refused(name, value):
    try:
        Sweep("linear", params={name: value})
    except SpecError as err:
        assert name in str(err)
    else:
        raise AssertionError(f"{name}={value} accepted")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.05, 5, allow_nan=False), min_size=1, max_size=5, unique=True),
    st.integers(1, 3000),
)
def test_valid_lam_axes_give_positive_n_train_by_rounding(lams, d_in):
    try:
        sweep = Sweep("linear", params={"d_in": d_in}, axes={"lam": lams})
    except SpecError as err:
        assert "n_train = round(d_in/lam) = 0" in str(err)
        assert any(round(d_in / lam) == 0 for lam in lams)
        return
    assert [r["n_train"] for r in sweep.runs()] == [round(d_in / lam) for lam in lams]
