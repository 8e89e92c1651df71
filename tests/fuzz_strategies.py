"""Hypothesis strategies and the property shared by the fuzzing suite (tests/test_fuzz_*.py).

The property (issue 16): for any mutated input, a reader or command either raises/exits with a
clear ``MarionetteError`` (exit 1), or an argparse usage error (exit 2), or returns a correct,
well-formed result; never another exception, never a partial output.

Profiles: every fuzz test exists twice, ``test_x`` with the fast profile (the default suite,
deterministic: ``derandomize``) and ``test_x_long`` marked ``slow`` (many more examples, random).
Run the long ones with ``python -m pytest -m slow tests/test_fuzz_*.py --hypothesis-show-statistics``;
each example is labelled with ``hypothesis.event`` (accepted / refused), so the statistics are the
case counts per reader and command.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import InvalidArgument

from engine import MarionetteError

# Hypothesis keeps caches in ./.hypothesis by default; keep the repository clean
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "marionette-hypothesis"))

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
FAST = settings(derandomize=True, **_COMMON)
LONG = settings(derandomize=False, **_COMMON)


def fuzz(fast: int, long: int, **strategies):
    """Decorate a property ``inner(fixtures..., **drawn)``; returns ``(fast test, slow test)``."""
    def deco(inner):
        quick = settings(FAST, max_examples=fast)(given(**strategies)(inner))
        slow = pytest.mark.slow(settings(LONG, max_examples=long)(given(**strategies)(inner)))
        return quick, slow
    return deco


# ---------------------------------------------------------------------- the property
def event(label: str) -> None:
    """``hypothesis.event`` (the case counts in the statistics); a no-op outside a Hypothesis test."""
    try:
        _event(label)
    except InvalidArgument:
        pass


def outcome(fn, *args, **kwargs):
    """Call ``fn``: ``("ok", result)`` or ``("refused", message)``; any other exception fails the test."""
    try:
        result = fn(*args, **kwargs)
    except MarionetteError as exc:
        msg = str(exc)
        assert msg.strip() and "Traceback" not in msg, msg
        event(f"{getattr(fn, '__name__', 'call')}: refused")
        return "refused", msg
    event(f"{getattr(fn, '__name__', 'call')}: accepted")
    return "ok", result


def run_cli(argv, label: str):
    """``marionette ARGV`` in-process -> (exit code, stdout, stderr); 0, 1 and 2 are the only allowed codes."""
    import contextlib
    import io

    from engine.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            rc = exc.code
    text = err.getvalue()
    assert rc in (0, 1, 2), f"exit {rc} for {argv}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    if rc:
        assert text.strip(), f"exit {rc} without a message for {argv}"
    event(f"{label}: exit {rc}")
    return rc, out.getvalue(), text


def no_partial_outputs(folder) -> None:
    """No temporary or partial files left anywhere under ``folder``."""
    left = [p for p in Path(folder).rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert not left, f"partial outputs left behind: {left}"


# ---------------------------------------------------------------------- values
HUGE_INTS = st.sampled_from([2 ** 31, 2 ** 63, 10 ** 20, 10 ** 25, 10 ** 400])
ODD_FLOATS = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 5e-324, -0.0, 1e9, -1.0])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), HUGE_INTS, st.integers().map(lambda v: -abs(v) - 1),
    ODD_FLOATS, st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["", "abc", "1e3", "nan", "inf", "12", "0x10", "\ufeff"]),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=3),
    st.sampled_from([[], {}, [[]], [[1, 2], [3]], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]]),
)


def _paths(doc, prefix=()):
    """Every path (tuple of keys/indices) into a JSON document, the root included."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):  # the first few entries of long lists are enough
            yield from _paths(v, prefix + (i,))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated_json(draw, doc, max_mutations: int = 3):
    """A copy of ``doc`` with 1..max_mutations edits: a value swapped (type, NaN/inf, huge, ...),
    a key removed, a list emptied/shortened/lengthened."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["swap", "swap", "swap", "delete", "shorten", "extend"]))
        if not path:
            if op == "swap":
                doc = copy.deepcopy(draw(VALUES))  # sampled values are shared objects: never edit them in place
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        value = parent[key]
        if op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "shorten" and isinstance(value, list) and value:
            parent[key] = value[: draw(st.integers(0, len(value) - 1))]
        elif op == "extend" and isinstance(value, list):
            parent[key] = value + [copy.deepcopy(value[0]) if value else None]
        else:
            parent[key] = copy.deepcopy(draw(VALUES))
    return doc


def dumps(doc) -> str:
    """JSON text (NaN/Infinity allowed, as Python writes them; huge ints as digits)."""
    return json.dumps(doc, allow_nan=True)


@st.composite
def mutated_text(draw, text: str):
    """Text-level damage: truncation, a byte-order mark, a garbage insertion, a character deleted."""
    op = draw(st.sampled_from(["truncate", "bom", "insert", "delete", "empty", "binary"]))
    if op == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if op == "bom":
        return "\ufeff" + text
    if op == "insert":
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.sampled_from(["\x00", "}", "{", "[", "\"", "<", ">", "=", "\n[x]\n", "é", "nan"])) \
            + text[i:]
    if op == "delete" and text:
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + text[i + 1:]
    if op == "binary":
        return "\x89PNG\r\n\x1a\n\x00\xff"
    return ""


# ---------------------------------------------------------------------- option values (as typed on a shell)
OPTION_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "-4", "1", "2", "3", "0.5", "1e-300", "-0", "nan", "NaN", "inf", "-inf", "1e308",
                     "1e9", "99999999999999999999", "1" * 400, "abc", "", "0x10", "1_0", " 3", "\u0663", "2.5", "1e3"]),
    st.integers(-10, 10).map(str),
    st.floats(-10, 10, allow_nan=False).map(repr),
)


def is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
