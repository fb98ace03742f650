"""`dragdiff edit` / `dragdiff generate` through the real CLI: outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragdiff.cli import main

FAST = [  # DragDiffusion, cut short
    "--preset",
    "dragdiffusion",
    "--set",
    "lora.steps=2",
    "--set",
    "lora.batch_size=1",
    "--set",
    "lora.rank=4",
    "--set",
    "inversion.num_steps=10",
    "--set",
    "drag.max_iterations=3",
]


@pytest.fixture
def files(tmp_path: Path, tiny_image: Image.Image, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("DRAGDIFF_CACHE", str(tmp_path / "cache"))
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    tiny_image.save(image)
    m = np.zeros((44, 60), np.uint8)
    m[8:36, 8:52] = 255
    Image.fromarray(m).save(mask)
    return {"image": image, "mask": mask, "out": tmp_path / "out.png", "dir": tmp_path}


def _outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name not in ("in.png", "mask.png", "cache", "bad")}


def test_edit_writes_image_record_and_animation(files, tiny_pipeline_dir: Path, capsys) -> None:
    gif = files["dir"] / "anim.gif"
    argv = [
        "edit",
        str(files["image"]),
        "--drag",
        "21,22:40,22",
        "--drag",
        "10,10:12,30",
        "--mask",
        str(files["mask"]),
        "--prompt",
        "a cat",
        "--model",
        str(tiny_pipeline_dir),
        *FAST,
        "--set",
        "drag.stop_distance=0",
        "--animation",
        str(gif),
        "--preview-every",
        "1",
        "-o",
        str(files["out"]),
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(files["out"]) as out:
        assert out.size == (60, 44)
    record = json.loads((files["dir"] / "out.json").read_text())
    assert record["iterations"] == 3 and record["mode"] == "real"
    assert record["instruction"]["handles"] == [[21.0, 22.0], [10.0, 10.0]] and record["instruction"]["mask"]
    assert record["config"]["inversion"]["num_steps"] == 10 and record["files"]["output"] == str(files["out"])
    assert record["model"] == str(tiny_pipeline_dir) and record["device"] == "cpu"
    with Image.open(gif) as anim:
        assert anim.n_frames == 3
    assert _outputs(files["dir"]) == {"out.png", "out.json", "anim.gif"}


def test_generate_then_drag_the_generated_image(files, tiny_pipeline_dir: Path) -> None:
    gen = files["dir"] / "gen.png"
    model = ["--model", str(tiny_pipeline_dir)]
    assert main(["generate", "a red circle", "--steps", "10", "--seed", "2", *model, "-o", str(gen)]) == 0
    latents = files["dir"] / "gen.latents.safetensors"
    assert latents.is_file()
    argv = [
        "edit",
        str(gen),
        "--generated",
        str(latents),
        "--drag",
        "20,30:40,30",
        *model,
        *FAST,
        "-o",
        str(files["out"]),
    ]
    assert main(argv) == 0
    record = json.loads((files["dir"] / "out.json").read_text())
    assert record["mode"] == "generated" and record["instruction"]["prompt"] == "a red circle"


def test_help_shows_the_defaults(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["edit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for expected in (
        "--drag X1,Y1:X2,Y2",
        "--set",
        "lora.rank=16",
        "drag.max_iterations=80",
        "inversion.strength=0.7",
        "default: 0",
        "--generated",
    ):
        assert expected in text


BAD_CASES = {
    "missing image": (["edit", "{dir}/nope.png", "--drag", "1,1:5,5"], "nope.png"),
    "corrupt image": (["edit", "{dir}/bad/broken.png", "--drag", "1,1:5,5"], "broken.png"),
    "point outside": (["edit", "{image}", "--drag", "1,1:99,5"], "outside the 60x44 image"),
    "malformed drag": (["edit", "{image}", "--drag", "1,1-5,5"], "X1,Y1:X2,Y2"),
    "unpaired drag": (["edit", "{image}", "--drag", "1,1:"], "X1,Y1:X2,Y2"),
    "no pairs": (["edit", "{image}"], "no drag given"),
    "mask of another size": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--mask", "{dir}/bad/small.png"],
        "10x10",
    ),
    "mask not binary": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--mask", "{dir}/bad/gray.png"],
        "black and white",
    ),
    "not an SD pipeline": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--model", "{dir}/bad"],
        "not a Stable Diffusion",
    ),
    "unreachable hub id": (["edit", "{image}", "--drag", "1,1:5,5", "--model", "nobody/nothing"], "--model"),
    "output is input": (["edit", "{image}", "--drag", "1,1:5,5", "-o", "{image}"], "is the input file"),
    "strength out of range": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--set", "inversion.strength=1.5"],
        "inversion.strength must be in (0, 1], got 1.5",
    ),
    "negative steps": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--set", "drag.max_iterations=-3"],
        "drag.max_iterations must be >= 0, got -3",
    ),
    "unknown field": (["edit", "{image}", "--drag", "1,1:5,5", "--set", "drag.speed=2"], "drag.speed"),
    "bad value": (["edit", "{image}", "--drag", "1,1:5,5", "--set", "drag.lr=fast"], "drag.lr"),
    "handle outside the mask": (
        ["edit", "{image}", "--drag", "1,1:20,20", "--mask", "{mask}"],
        "handle 1 at (1, 1) is outside the editable mask",
    ),
    "image too small": (["edit", "{dir}/bad/tiny.png", "--drag", "0,0:0,0"], "1x1 px"),
    "roi without the handle": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--roi", "20,0,60,44"],
        "roi '20,0,60,44' does not contain handle 1 at (1, 1)",
    ),
    "roi outside the image": (["edit", "{image}", "--drag", "1,1:5,5", "--roi", "0,0,99,44"], "60x44"),
    "bad quality": (["edit", "{image}", "--drag", "1,1:5,5", "--quality", "0"], "--quality must be 1..100"),
    "bad latents": (
        ["edit", "{image}", "--drag", "1,1:5,5", "--generated", "{dir}/bad/broken.png"],
        "broken.png",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(
    case: str, files, tiny_pipeline_dir, monkeypatch, capsys
):
    monkeypatch.setenv("HF_HUB_CACHE", str(files["dir"] / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that refuses at once
    bad = files["dir"] / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (10, 10), 255).save(bad / "small.png")
    Image.new("L", (60, 44), 128).save(bad / "gray.png")
    Image.new("RGB", (1, 1), "red").save(bad / "tiny.png")
    args, message = BAD_CASES[case]
    argv = [a.format(dir=files["dir"], image=files["image"], mask=files["mask"]) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(tiny_pipeline_dir)]
    if "-o" not in argv:
        argv += ["-o", str(files["out"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dragdiff: error: ") and message in err[0], err
    assert _outputs(files["dir"]) == set()
    assert files["image"].read_bytes()[:4] == b"\x89PNG"  # input untouched


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "{dir}/out.bmp"], "out.bmp"),
        (["-o", "{dir}/out", "--set", "drag.max_iterations=1"], "'out'"),
        (["--animation", "{dir}/drag.mp4"], "drag.mp4"),
    ],
)
def test_unsupported_output_suffix_fails_before_the_model_loads(
    extra: list[str], message: str, files, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_model(args):
        raise AssertionError("the model must not load for a bad output path")

    monkeypatch.setattr("dragdiff.commands._load_editor", no_model)
    argv = ["edit", str(files["image"]), "--drag", "1,1:5,5", *(a.format(dir=files["dir"]) for a in extra)]
    if "-o" not in argv:
        argv += ["-o", str(files["out"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dragdiff: error: cannot save") and message in err[0], err
    assert _outputs(files["dir"]) == set()


def test_seed_flag_and_set_seed_are_the_config_seed() -> None:
    import argparse

    from dragdiff.commands import build_config

    def args(seed: int | None, overrides: list[str]) -> argparse.Namespace:
        return argparse.Namespace(
            preset="dragdiffusion", seed=seed, preview_every=None, animation=None, overrides=overrides
        )

    assert build_config(args(5, [])).seed == 5
    assert build_config(args(None, ["seed=6"])).seed == 6
    assert build_config(args(None, [])).seed == 0
    assert not hasattr(build_config(args(5, [])).lora, "seed")


def test_default_edit_is_the_warp_and_keeps_every_pixel_outside_the_mask(files, tiny_pipeline_dir) -> None:
    """No preset: the warp method; the record says so and the pixels outside the mask are the input's."""
    argv = ["edit", str(files["image"]), "--drag", "21,22:30,22", "--mask", str(files["mask"])]
    argv += ["--model", str(tiny_pipeline_dir), "--set", "warp.fill_steps=4", "-o", str(files["out"])]
    assert main(argv) == 0
    record = json.loads((files["dir"] / "out.json").read_text())
    assert record["method"] == "warp" and record["kept_outside_mask"]
    assert record["moved_parts"] >= 1
    src = np.asarray(Image.open(files["image"]).convert("RGB"))
    out = np.asarray(Image.open(files["out"]).convert("RGB"))
    outside = np.asarray(Image.open(files["mask"])) == 0
    assert np.array_equal(src[outside], out[outside])
    assert not np.array_equal(src, out)


def test_method_flag_overrides_the_preset(files, tiny_pipeline_dir) -> None:
    argv = ["edit", str(files["image"]), "--drag", "21,22:30,22", *FAST, "--method", "warp"]
    argv += ["--set", "warp.fill=classical", "--model", str(tiny_pipeline_dir), "-o", str(files["out"])]
    assert main(argv) == 0
    record = json.loads((files["dir"] / "out.json").read_text())
    assert record["method"] == "warp" and record["config"]["lora"]["steps"] == 2  # preset, then --method


def test_unknown_method_is_one_line_naming_the_choices(files, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["edit", str(files["image"]), "--drag", "1,1:5,5", "--method", "magic", "-o", "x.png"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'magic'" in err[0] and "warp" in err[0] and "dragdiffusion" in err[0]
    assert _outputs(files["dir"]) == set()


def test_roi_flag_edits_the_box_and_records_it(files, tiny_pipeline_dir) -> None:
    argv = ["edit", str(files["image"]), "--drag", "21,22:30,22", "--roi", "4,2,56,42"]
    argv += ["--model", str(tiny_pipeline_dir), "--set", "warp.fill_steps=4", "-o", str(files["out"])]
    assert main(argv) == 0
    record = json.loads((files["dir"] / "out.json").read_text())
    assert record["roi"] == [4, 2, 56, 42]
    src = np.asarray(Image.open(files["image"]).convert("RGB"))
    out = np.asarray(Image.open(files["out"]).convert("RGB"))
    outside = np.ones((44, 60), bool)
    outside[2:42, 4:56] = False
    assert np.array_equal(src[outside], out[outside]) and not np.array_equal(src, out)


def test_a_jpeg_edit_keeps_the_inputs_quantisation_icc_and_exif(files, tiny_pipeline_dir) -> None:
    from PIL import ImageCms, JpegImagePlugin

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    photo = files["dir"] / "photo.jpg"
    Image.open(files["image"]).convert("RGB").save(
        photo, quality=80, subsampling=2, icc_profile=icc, exif=exif
    )
    out = files["dir"] / "edited.jpg"
    argv = ["edit", str(photo), "--drag", "21,22:30,22", "--model", str(tiny_pipeline_dir)]
    assert main(argv + ["--set", "warp.fill_steps=4", "-o", str(out)]) == 0
    with Image.open(photo) as a, Image.open(out) as b:
        assert b.quantization == a.quantization and JpegImagePlugin.get_sampling(b) == 2
        assert b.info["icc_profile"] == icc and b.getexif()[0x010F] == "PhoneMaker"
