"""StimulusSet and Brain-Score's place_on_screen semantics."""

from __future__ import annotations

import hashlib
import inspect
import io

import numpy as np
import pytest
from PIL import Image

from cortexbox.benchmarks import StimulusSet
from cortexbox.benchmarks.stimuli import GREY, apply_ratio


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random colours kept away from grey 128 so every original pixel is distinguishable from the screen."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 100, size=(height, width, 3)).astype(np.uint8)


def _placed(pixels: np.ndarray, *, source: float, target: float, reencode: bool = True) -> np.ndarray:
    stimuli = StimulusSet.from_bytes("tiny", {"a": _png(pixels)}, visual_degrees=source)
    [(stimulus_id, image)] = list(stimuli.iter_placed(target, reencode=reencode))
    assert stimulus_id == "a"
    return image


def test_enlarge_pastes_centred_on_grey_screen():
    pixels = _pattern(height=4, width=6)
    placed = _placed(pixels, source=4, target=8)  # ratio 2: 12 x 8 screen, image at left 3, top 2
    assert placed.shape == (8, 12, 3) and placed.dtype == np.uint8
    np.testing.assert_array_equal(placed[2:6, 3:9], pixels)
    screen = np.ones((8, 12), dtype=bool)
    screen[2:6, 3:9] = False
    assert (placed[screen] == GREY).all()
    assert GREY == (128, 128, 128)


def test_enlarge_rounds_half_to_even_like_numpy():
    pixels = _pattern(height=3, width=3)
    placed = _placed(pixels, source=2, target=3)  # 1.5 * 3 = 4.5 -> 4; offset (4 - 3) / 2 = 0.5 -> 0
    assert placed.shape == (4, 4, 3)
    np.testing.assert_array_equal(placed[0:3, 0:3], pixels)
    assert (placed[3, :] == GREY).all() and (placed[:, 3] == GREY).all()
    placed = _placed(_pattern(5, 5), source=2, target=3)  # 7.5 -> 8; offset 1.5 -> 2
    assert placed.shape == (8, 8, 3)
    np.testing.assert_array_equal(placed[2:7, 2:7], _pattern(5, 5))


def test_shrink_centre_crops_without_resizing():
    pixels = _pattern(height=8, width=10)
    placed = _placed(pixels, source=8, target=4)  # ratio 0.5: 5 x 4 crop from left round(2.5)=2, top 2
    assert placed.shape == (4, 5, 3)
    np.testing.assert_array_equal(placed, pixels[2:6, 2:7])


def test_equal_degrees_return_the_original_pixels():
    pixels = _pattern(height=7, width=5)
    np.testing.assert_array_equal(_placed(pixels, source=8, target=8), pixels)


def test_apply_ratio_keeps_mode_when_cropping_and_makes_rgb_when_enlarging():
    grey_image = Image.fromarray(np.full((10, 10), 30, dtype=np.uint8), mode="L")
    assert apply_ratio(grey_image, 0.5).mode == "L"
    enlarged = apply_ratio(grey_image, 1.2)
    assert enlarged.mode == "RGB" and enlarged.size == (12, 12)
    with pytest.raises(ValueError):
        apply_ratio(grey_image, 0)


@pytest.mark.data
def test_jpeg_sources_are_reencoded_like_brainscore_saves_them(bench):
    stimuli = bench.stimulus_set
    target = stimuli.visual_degrees * 1.25  # a model whose field of view is 1.25 times the images'
    first = stimuli.stimulus_ids[0]
    blob = next(stimuli.iter_bytes())[1]
    with Image.open(io.BytesIO(blob)) as original:
        converted = apply_ratio(original, 1.25)  # 112 -> 140
        buffer = io.BytesIO()
        converted.save(buffer, format="JPEG")  # what Brain-Score's image.save('<name>.jpg') writes
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    stimulus_id, placed = next(stimuli.iter_placed(target))
    assert stimulus_id == first and placed.shape == (140, 140, 3)
    np.testing.assert_array_equal(placed, expected)
    _, exact = next(stimuli.iter_placed(target, reencode=False))
    np.testing.assert_array_equal(exact, np.asarray(converted.convert("RGB")))
    assert (exact[:14, :] == GREY).all()  # 14-pixel grey border before JPEG
    assert not np.array_equal(exact, placed)  # the second JPEG encode is lossy


@pytest.mark.data
def test_iter_placed_streams_and_is_deterministic(bench):
    stimuli = bench.stimulus_set
    assert inspect.isgenerator(stimuli.iter_placed(8))
    first_pass = [(sid, hashlib.sha256(image.tobytes()).hexdigest()) for sid, image in stimuli.iter_placed(6.5)]
    second_pass = [(sid, hashlib.sha256(image.tobytes()).hexdigest()) for sid, image in stimuli.iter_placed(6.5)]
    assert first_pass == second_pass
    assert [sid for sid, _ in first_pass] == stimuli.stimulus_ids
    _, image = next(stimuli.iter_placed(6.5))
    side = round(112 * 6.5 / stimuli.visual_degrees)  # 65 at 11.2 degrees (91 at 8)
    assert image.shape == (side, side, 3) and side == 65
    with pytest.raises(ValueError):
        next(stimuli.iter_placed(0))


def test_placement_key_and_hash():
    images = {"a": _png(_pattern(4, 4)), "b": _png(_pattern(4, 4, seed=1))}
    stimuli = StimulusSet.from_bytes("tiny", images, visual_degrees=8)
    assert stimuli.placement_key(10) == "target10.00--source8.00"
    assert stimuli.placement_key(8.333) == "target8.33--source8.00"
    assert len(stimuli) == 2 and stimuli.stimulus_ids == ["a", "b"] and "a" in stimuli
    assert len(stimuli.hash) == 64
    changed = StimulusSet.from_bytes("tiny", {"a": images["a"], "b": _png(_pattern(4, 4, seed=2))}, visual_degrees=8)
    renamed = StimulusSet.from_bytes("tiny", {"a": images["a"], "c": images["b"]}, visual_degrees=8)
    assert len({stimuli.hash, changed.hash, renamed.hash}) == 3
    with pytest.raises(ValueError):
        StimulusSet.from_bytes("bad", images, visual_degrees=0)
