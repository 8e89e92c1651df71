"""Photometric calibration in ingest: per-camera gains from the subject seen by every camera."""

import numpy as np

from engine.capture.ingest.photometric import apply_gain, camera_gains, subject_colours
from engine.geometry.camera import Camera
from engine.io.colour import linear_to_srgb, srgb_to_linear


def _observations(seed=0, cameras=4, parts=12):
    rng = np.random.default_rng(seed)
    albedo = rng.uniform(0.05, 0.6, (parts, 3))
    response = rng.uniform(0.5, 2.0, (cameras, 3))
    colours = response[:, None] * albedo[None]
    return colours.astype(np.float32), response


def _expected_correction(response):
    inv = 1.0 / response
    return inv / np.exp(np.log(inv).mean(0, keepdims=True))  # geometric mean 1 per channel


def test_gains_undo_each_cameras_response():
    colours, response = _observations()
    gains, info = camera_gains(colours)
    np.testing.assert_allclose(gains, _expected_correction(response), rtol=1e-4)
    assert info["residual_log_rms"] < 1e-6 and info["pairs_used"] == 4 * 12 * 3
    corrected = colours * gains[:, None]
    assert np.ptp(np.log(corrected), axis=0).max() < 1e-4  # every camera now sees the same albedo


def test_gains_survive_unseen_parts_dark_parts_and_an_outlier():
    colours, response = _observations(seed=1)
    colours[0, :4] = np.nan                  # camera 0 never sees four parts
    colours[:, 5, 2] = 0.001                 # a crushed-black channel carries no ratio
    colours[2, 7] *= 3.0                     # one part looks different from camera 2 (chest vs back)
    gains, _ = camera_gains(colours)
    np.testing.assert_allclose(gains, _expected_correction(response), rtol=0.02)


def test_camera_seeing_nothing_shared_keeps_gain_one():
    colours, _ = _observations(seed=2)
    colours[3] = np.nan
    gains, _ = camera_gains(colours)
    assert np.allclose(gains[3], 1.0)


def test_apply_gain_works_in_linear_light():
    img = np.full((2, 3, 3), 128, np.uint8)
    assert np.array_equal(apply_gain(img, np.ones(3)), img)
    out = apply_gain(img, np.array([2.0, 1.0, 0.5]))  # RGB gains; the image is BGR
    lin = srgb_to_linear(128 / 255.0)
    want_r = np.rint(linear_to_srgb(lin * 2.0) * 255)
    want_b = np.rint(linear_to_srgb(lin * 0.5) * 255)
    assert out[0, 0, 2] == want_r and out[0, 0, 1] == 128 and out[0, 0, 0] == want_b
    assert apply_gain(np.full((1, 1, 3), 250, np.uint8), np.full(3, 3.0)).max() == 255  # clips at white


def test_subject_colours_reads_along_the_bones_inside_the_mask():
    cam = Camera(name="c", K=np.array([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]), R=np.eye(3), t=np.zeros(3),
                 width=64, height=64)
    joints = np.array([[[0.0, -0.3, 2.0], [0.0, 0.3, 2.0], [1.0, 0.3, 2.0]]] * 3)  # bone 0 vertical, bone 1 across
    img = np.zeros((3, 64, 64, 3), np.uint8)
    img[:, :, 30:35] = (40, 80, 200)         # BGR stripe under bone 0
    mask = [np.zeros((64, 64), np.uint8) for _ in range(3)]
    for m in mask:
        m[:, 30:35] = 255                    # bone 1 lies outside the mask: never read
    out = subject_colours(img, mask, joints, [(0, 1), (1, 2)], cam, stride=1)
    np.testing.assert_allclose(out[0], srgb_to_linear(np.array([200, 80, 40]) / 255.0), rtol=1e-5)
    assert np.isnan(out[1]).all()


def test_a_camera_unseen_in_one_channel_does_not_shift_the_others():
    colours, response = _observations(seed=3)
    colours[3, :, 2] = np.nan  # camera 3 sees nothing in blue
    gains, _ = camera_gains(colours)
    seen = _expected_correction(response[:3])
    np.testing.assert_allclose(gains[:3, 2], seen[:, 2], rtol=1e-4)
    assert gains[3, 2] == 1.0
    np.testing.assert_allclose(gains[:, :2], _expected_correction(response)[:, :2], rtol=1e-4)
