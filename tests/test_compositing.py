import numpy as np

from engine.scene.compositing import composite_layers, linear_to_srgb, srgb_to_linear, to_blender_pixels


def test_nearer_layer_wins_per_pixel():
    red = np.zeros((2, 2, 4), np.float32); red[..., 0] = 1; red[..., 3] = 1
    blue = np.zeros((2, 2, 4), np.float32); blue[..., 2] = 1; blue[..., 3] = 1
    d_red = np.array([[1.0, 3.0], [1.0, 3.0]])
    d_blue = np.array([[2.0, 2.0], [2.0, 2.0]])
    out = composite_layers([red, blue], [d_red, d_blue])
    assert np.allclose(out[:, 0], [1, 0, 0, 1])
    assert np.allclose(out[:, 1], [0, 0, 1, 1])


def test_half_transparent_over_background():
    fg = np.zeros((1, 1, 4), np.float32); fg[..., 0] = 1; fg[..., 3] = 0.5
    out = composite_layers([fg], [np.ones((1, 1))], background=np.array([0, 1, 0, 1.0]))
    assert np.allclose(out[0, 0], [0.5, 0.5, 0, 1], atol=1e-6)
    # without background, straight colour is preserved and alpha stays partial
    out = composite_layers([fg], [np.full((1, 1), np.inf)])
    assert np.allclose(out[0, 0], [1, 0, 0, 0.5], atol=1e-6)


def test_srgb_round_trip_and_blender_layout():
    x = np.linspace(0, 1, 256, dtype=np.float32)
    assert np.abs(linear_to_srgb(srgb_to_linear(x)) - x).max() < 1e-5
    img = np.zeros((2, 3, 4), np.float32)
    img[0, :, :] = [1, 1, 1, 1]  # top row white
    flat = to_blender_pixels(img).reshape(2, 3, 4)
    assert np.allclose(flat[1], 1) and np.allclose(flat[0], 0)  # bottom row first
