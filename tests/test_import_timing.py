"""engine.motion.timing: Blender's frame-rate representation and the bounds of import options."""

import math

import pytest

from engine import MarionetteError
from engine.motion.timing import (MAX_SCENE_FRAME, check_import_options, check_key_range, rate_of, same_rate,
                                  scene_rate)


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0, 60.0, 29.97, 23.976, 7.5, 0.25, 119.88, 1000.0])
def test_scene_rate_round_trips(fps):
    whole, base = scene_rate(fps)
    assert isinstance(whole, int) and 1 <= whole <= 32767 and 1e-5 <= base <= 1e6
    assert rate_of(whole, base) == pytest.approx(fps, rel=1e-12)
    assert same_rate(rate_of(whole, base), fps)
    if float(fps).is_integer():
        assert (whole, base) == (int(fps), 1.0)


def test_scene_rate_refuses_non_rates():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(MarionetteError, match="frame rate"):
            scene_rate(bad)


def test_import_options_bounds():
    assert check_import_options(1, 0.0, 1.0) == (1, 0.0, 1.0)
    assert check_import_options(-MAX_SCENE_FRAME, 1000.0, 1e4) == (-MAX_SCENE_FRAME, 1000.0, 1e4)
    for start, fps, scale, match in [
        (MAX_SCENE_FRAME + 1, 0, 1, "Start Frame"), (1.5, 0, 1, "Start Frame"), (True, 0, 1, "Start Frame"),
        (1, -1, 1, "Frame Rate"), (1, 0.05, 1, "Frame Rate"), (1, 1001, 1, "Frame Rate"), (1, math.nan, 1, "Frame Rate"),
        (1, 0, 0, "Scale"), (1, 0, -1, "Scale"), (1, 0, 1e5, "Scale"), (1, 0, math.inf, "Scale"),
    ]:
        with pytest.raises(MarionetteError, match=match):
            check_import_options(start, fps, scale)


def test_key_range():
    assert check_key_range(1, 99, True, 30.0, 3.3) == 100
    assert check_key_range(-5, 10, False, 30.0, 0.3) == 5
    with pytest.raises(MarionetteError, match="past Blender's last frame"):
        check_key_range(MAX_SCENE_FRAME - 5, 10, False, 30.0, 0.3)
    with pytest.raises(MarionetteError, match="negative"):
        check_key_range(-5, 10, True, 30.0, 0.3)
