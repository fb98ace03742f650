"""The methods layer: one registry behind the config's names, one contract for every method.

Every method, run through ``DragEditor`` on the tiny pipeline: the record names it, bad input fails before
any work, and with a mask every pixel outside it is the input's (except ``faithful``, the paper's structure).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from PIL import Image

from conftest import build_tiny_pipeline, make_test_image
from dragdiff.config import DEFAULT_PRESET, METHOD_NAMES, PRESETS, EditConfig, preset
from dragdiff.editor import DragEditor
from dragdiff.geometry.blend import keep_outside
from dragdiff.methods import METHODS, get_method
from dragdiff.types import DragInstruction, InputError

SHORT = {  # every method cut to seconds on the tiny pipeline
    "lora.steps": 2,
    "lora.batch_size": 1,
    "lora.rank": 4,
    "inversion.num_steps": 10,
    "drag.max_iterations": 2,
    "warp.fill_steps": 4,
}


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> DragEditor:
    return DragEditor(build_tiny_pipeline(), lora_cache_dir=tmp_path_factory.mktemp("lora-cache"))


def _mask() -> np.ndarray:
    m = np.zeros((44, 60), bool)
    m[6:38, 6:50] = True
    return m


def test_registry_is_the_config_names_and_every_preset_names_a_method() -> None:
    assert set(METHODS) == set(METHOD_NAMES)
    assert {p.method for p in PRESETS.values()} == set(METHOD_NAMES)  # every method has a preset
    assert PRESETS[DEFAULT_PRESET] == EditConfig()
    for name, run in METHODS.items():  # one signature for all
        assert list(inspect.signature(run).parameters) == ["ctx", "instruction", "config", "stop"], name
    with pytest.raises(Exception, match="unknown method 'magic'"):
        get_method("magic")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_edits_and_keeps_what_is_outside_the_mask(editor: DragEditor, name: str) -> None:
    image, mask = make_test_image(), _mask()
    ins = DragInstruction.from_pairs([((21, 22), (31, 22))], mask=mask, prompt="a disc")
    result = editor.edit(image, ins, preset(name).override(**SHORT))
    assert result.record["method"] == preset(name).method and result.image.size == image.size
    src, out = np.asarray(image), np.asarray(result.image.convert("RGB"))
    outside = np.equal(src[~mask], out[~mask]).all()
    if name == "faithful":  # the paper's output: the whole decoded picture (the round trip changes it)
        assert not result.record["kept_outside_mask"] and not outside
    else:
        assert result.record["kept_outside_mask"] and outside
    assert not np.array_equal(src[mask], out[mask])  # the edit did something inside


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_handle_outside_the_mask_fails_before_any_work(editor: DragEditor, method: str) -> None:
    ins = DragInstruction.from_pairs([((55, 40), (30, 20))], mask=_mask())
    with pytest.raises(InputError, match=r"handle 1 at \(55, 40\) is outside the editable mask"):
        editor.iter_edit(make_test_image(), ins, EditConfig(method=method))  # raised by the call itself


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_an_image_too_small_to_edit_fails_before_any_work(editor: DragEditor, method: str) -> None:
    ins = DragInstruction.from_pairs([((0, 0), (0, 0))])
    with pytest.raises(InputError, match="the image is 1x1 px"):
        editor.iter_edit(Image.new("RGB", (1, 1)), ins, EditConfig(method=method))


def test_keep_outside_is_exact_outside_and_soft_only_inside() -> None:
    source = Image.new("RGB", (20, 10), (0, 0, 0))
    edited = Image.new("RGB", (20, 10), (200, 100, 50))
    mask = np.zeros((10, 20), bool)
    mask[2:8, 5:15] = True
    out = np.asarray(keep_outside(source, edited, mask, feather_px=2))
    assert (out[~mask] == 0).all()
    assert (out[5, 9] == (200, 100, 50)).all()  # deep inside: the edit
    assert 0 < out[5, 5, 0] < 200  # on the mask's edge: blended
