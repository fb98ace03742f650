"""DragBench reader/writer: layout, order, points/mask semantics, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragdiff.bench.dragbench import (
    list_samples,
    load_sample,
    read_dragbench,
    safe_load_pickle,
    write_dragbench_sample,
)
from dragdiff.types import DragInstruction, InputError


def _make_sample(folder: Path, size=(40, 30), points=((5, 6), (20, 6)), mask=None, prompt="a cat") -> Path:
    folder.mkdir(parents=True)
    Image.new("RGB", size, (10, 200, 30)).save(folder / "original_image.png")
    Image.new("RGB", size).save(folder / "user_drag.png")
    if mask is None:
        mask = np.zeros(size[::-1], np.uint8)
    meta = {"prompt": prompt, "points": [list(p) for p in points], "mask": mask}
    (folder / "meta_data.pkl").write_bytes(pickle.dumps(meta))
    return folder


def test_reads_samples_in_sorted_order_with_categories(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 3:30] = 1
    _make_sample(tmp_path / "b_cat" / "s2")
    _make_sample(tmp_path / "b_cat" / "s1", points=((4, 6), (3, 4), (10, 11), (12, 13)), mask=mask)
    _make_sample(tmp_path / "a_cat" / "z9", prompt="")
    (tmp_path / ".hidden").mkdir()
    samples = list(read_dragbench(tmp_path))
    assert [s.key for s in samples] == ["a_cat/z9", "b_cat/s1", "b_cat/s2"]
    two = samples[1]
    assert two.ref.category == "b_cat" and two.image.size == (40, 30)
    ins = two.instruction
    assert [p.as_tuple() for p in ins.handles] == [(4, 6), (10, 11)]
    assert [p.as_tuple() for p in ins.targets] == [(3, 4), (12, 13)]
    assert ins.prompt == "a cat" and ins.mask.dtype == bool and ins.mask.sum() == 15 * 27
    assert samples[0].instruction.mask is None  # an all-zero mask means "no mask drawn"
    assert samples[0].target is None and samples[0].gt is None


def test_refuses_code_in_the_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    folder = _make_sample(tmp_path / "cat" / "evil")
    (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": Evil(), "points": [], "mask": None}))
    with pytest.raises(InputError, match=r"refusing to unpickle global '(posix|os|nt)\.mkdir'"):
        load_sample(list_samples(tmp_path)[0])
    assert not marker.exists()


def test_numpy_pickles_from_either_numpy_generation_load(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"a": arr, "s": np.float32(1.5), "l": [1, "x", (2.0, None)]}))
    data = safe_load_pickle(path)
    np.testing.assert_array_equal(data["a"], arr)
    assert data["s"] == 1.5 and data["l"] == [1, "x", (2.0, None)]
    # numpy 1.x names the reconstructor under numpy.core: same object, still admitted
    old = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(old)
    np.testing.assert_array_equal(safe_load_pickle(path), arr)


@pytest.mark.parametrize(
    "points, match",
    [([[1, 2], [3, 4], [5, 6]], "even count"), ([[1, 2], [300, 4]], r"target 1 at \(300, 4\) is outside")],
)
def test_bad_metadata_names_file_and_value(tmp_path, points, match):
    _make_sample(tmp_path / "c" / "s", points=points)
    with pytest.raises(InputError, match=match) as info:
        load_sample(list_samples(tmp_path)[0])
    assert "meta_data.pkl" in str(info.value)


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_samples(tmp_path / "nope")
    with pytest.raises(InputError, match="no DragBench samples"):
        list_samples(tmp_path)
    (tmp_path / "c" / "s").mkdir(parents=True)
    with pytest.raises(InputError, match="lacks original_image.png, meta_data.pkl"):
        list_samples(tmp_path)


def test_writer_round_trips_through_the_reader(tmp_path):
    image = Image.new("RGB", (48, 32), (200, 100, 50))
    mask = np.zeros((32, 48), bool)
    mask[4:20, 8:40] = True
    ins = DragInstruction.from_pairs(
        [((10, 12), (30, 14)), ((9, 5), (6, 9))], mask=mask, prompt="a red circle"
    )
    write_dragbench_sample(tmp_path / "move" / "000", image, ins)
    assert sorted(p.name for p in (tmp_path / "move" / "000").iterdir()) == [
        "meta_data.pkl", "original_image.png", "user_drag.png",
    ]  # fmt: skip
    assert Image.open(tmp_path / "move" / "000" / "user_drag.png").size == (48, 32)
    (sample,) = read_dragbench(tmp_path)
    assert sample.instruction.handles == ins.handles and sample.instruction.targets == ins.targets
    np.testing.assert_array_equal(sample.instruction.mask, mask)
    assert sample.instruction.prompt == "a red circle"
    assert np.array_equal(np.asarray(sample.image), np.asarray(image))
