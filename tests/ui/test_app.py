"""The web editor without a browser: coordinates, mask, instruction, settings, command line, file serving."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from dragdiff.config import ConfigError, EditConfig, preset  # noqa: E402
from dragdiff.types import InputError, ProgressEvent  # noqa: E402
from dragdiff.ui import app as ui  # noqa: E402


@pytest.mark.parametrize("size", [(96, 32), (32, 96), (60, 44), (700, 90), (3000, 1000), (7, 5)])
def test_every_original_pixel_survives_the_display_round_trip(size: tuple[int, int]) -> None:
    scale = ui.display_scale(size)
    shown = ui.display_size(size, scale)
    assert max(shown) >= min(ui.DISPLAY_MIN, max(size)) * 0.9 and max(shown) <= ui.DISPLAY_MAX
    xs = np.arange(size[0])
    ys = np.arange(size[1])
    # where each original pixel's centre lands on the display, rounded to the display pixel a click reports
    disp_x = np.floor((xs + 0.5) * scale).astype(int)
    disp_y = np.floor((ys + 0.5) * scale).astype(int)
    back = np.array([ui.display_to_image((dx, 0), scale, size)[0] for dx in disp_x])
    back_y = np.array([ui.display_to_image((0, dy), scale, size)[1] for dy in disp_y])
    if scale >= 1:  # enlarged or as is: every pixel can be clicked exactly
        assert (back == xs).all() and (back_y == ys).all()
    else:  # reduced: a click is as precise as one display pixel
        assert np.abs(back - xs).max() <= 0.5 / scale + 0.5 and np.abs(back_y - ys).max() <= 0.5 / scale + 0.5
    # clicks on the very edge of the display stay inside the image
    assert ui.display_to_image((shown[0] + 5, -3), scale, size) == (size[0] - 1, 0)


def test_small_images_are_enlarged_by_a_whole_factor_so_clicks_map_exactly() -> None:
    assert ui.display_scale((64, 64)) == 8.0
    for dx in range(8):  # every display pixel of original pixel 5 maps back to 5
        assert ui.display_to_image((5 * 8 + dx, 3 * 8 + dx), 8.0, (64, 64)) == (5, 3)


def _editor_value(image_size: tuple[int, int], painted: tuple[int, int, int, int] | None, canvas=None):
    w, h = canvas or image_size
    layer = np.zeros((h, w, 4), np.uint8)
    if painted is not None:
        x0, y0, x1, y1 = painted
        layer[y0:y1, x0:x1] = (255, 255, 255, 140)
    background = np.zeros((image_size[1], image_size[0], 4), np.uint8)
    background[..., 3] = 255
    return {"background": background, "layers": [layer], "composite": None}


def test_painted_strokes_become_the_editable_mask_in_image_pixels() -> None:
    mask = ui.mask_from_editor(_editor_value((96, 32), (10, 4, 30, 20)), (96, 32))
    assert mask is not None and mask.shape == (32, 96) and mask.dtype == bool
    assert mask[4:20, 10:30].all() and mask.sum() == 20 * 16


def test_a_canvas_of_another_size_is_resized_to_the_image() -> None:
    value = _editor_value((96, 32), (20, 8, 60, 40), canvas=(192, 64))  # canvas drawn at twice the size
    mask = ui.mask_from_editor(value, (96, 32))
    assert mask is not None and mask.shape == (32, 96)
    assert mask[4:20, 10:30].all() and not mask[:4].any() and not mask[:, 30:].any()


def test_nothing_painted_means_no_mask() -> None:
    assert ui.mask_from_editor(_editor_value((96, 32), None), (96, 32)) is None
    assert ui.mask_from_editor(None, (96, 32)) is None


def test_editor_background_drops_alpha_onto_white() -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque pixel kept, transparent ones white
    image = ui.editor_background({"background": rgba, "layers": []})
    assert image is not None and image.size == (3, 2) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == (10, 20, 30) and image.getpixel((1, 1)) == (255, 255, 255)


def test_clicks_pair_up_into_an_instruction() -> None:
    mask = np.ones((32, 96), bool)
    ins = ui.make_instruction([(10, 5), (40, 6), (80, 30), (70, 2)], mask, "a cat", (96, 32))
    assert [p.as_tuple() for p in ins.handles] == [(10, 5), (80, 30)]
    assert [p.as_tuple() for p in ins.targets] == [(40, 6), (70, 2)]
    assert ins.prompt == "a cat" and ins.mask is mask


def test_missing_points_are_a_clear_error() -> None:
    with pytest.raises(InputError, match="click a handle"):
        ui.make_instruction([], None, "", (96, 32))
    with pytest.raises(InputError, match=r"handle 2 at \(50, 7\) has no target"):
        ui.make_instruction([(1, 1), (2, 2), (50, 7)], None, "", (96, 32))


def test_the_advanced_panel_starts_from_the_config_defaults() -> None:
    values = dict(zip([k for k, _ in ui.ADVANCED], ui.panel_values("dragdiffusion"), strict=True))
    cfg = EditConfig(method="dragdiffusion")
    assert values["lora.steps"] == cfg.lora.steps and values["lora.lr"] == cfg.lora.lr
    assert values["lora.rank"] == cfg.lora.rank and values["inversion.strength"] == cfg.inversion.strength
    assert values["drag.max_iterations"] == cfg.drag.max_iterations and values["drag.lr"] == cfg.drag.lr
    assert (values["drag.r_m"], values["drag.r_p"], values["drag.lam"]) == (
        cfg.drag.r_m,
        cfg.drag.r_p,
        cfg.drag.lam,
    )
    assert values["seed"] == cfg.seed
    # unchanged panel -> exactly the preset (except the preview cadence the page asks for)
    built = ui.config_from_panel("dragdiffusion", ui.panel_values("dragdiffusion"))
    assert built.override(**{"runtime.preview_every": cfg.runtime.preview_every}) == cfg


def test_panel_values_reach_the_config_and_bad_ones_are_named() -> None:
    values = ui.panel_values("dragdiffusion")
    keys = [k for k, _ in ui.ADVANCED]
    values[keys.index("drag.max_iterations")] = 7.0  # gr.Number may hand floats to int fields
    values[keys.index("drag.lr")] = 0.05
    cfg = ui.config_from_panel("dragdiffusion", values)
    assert cfg.drag.max_iterations == 7 and isinstance(cfg.drag.max_iterations, int) and cfg.drag.lr == 0.05
    values[keys.index("lora.rank")] = 2.5
    with pytest.raises(ConfigError, match=r"LoRA rank \(lora.rank\) must be a whole number, got 2.5"):
        ui.config_from_panel("dragdiffusion", values)
    values[keys.index("lora.rank")] = 4
    values[keys.index("inversion.strength")] = 1.5
    with pytest.raises(ConfigError, match=r"inversion.strength must be in \(0, 1\], got 1.5"):
        ui.config_from_panel("dragdiffusion", values)
    values[keys.index("inversion.strength")] = None
    with pytest.raises(ConfigError, match=r"Inversion strength \(inversion.strength\) is empty"):
        ui.config_from_panel("dragdiffusion", values)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        ui.config_from_panel("nope", values)


def test_an_empty_seam_field_means_the_seam_by_the_picture_s_size() -> None:
    keys = [k for k, _ in ui.ADVANCED]
    values = ui.panel_values("warp")
    assert values[keys.index("warp.seam_px")] is None  # the default: no number, the rule
    assert ui.config_from_panel("warp", values).warp.seam_px is None
    values[keys.index("warp.seam_px")] = 3.0
    assert ui.config_from_panel("warp", values).warp.seam_px == 3
    values[keys.index("warp.seam_px")] = 1.5
    with pytest.raises(ConfigError, match=r"warp.seam_px\) must be a whole number, got 1.5"):
        ui.config_from_panel("warp", values)


def test_the_depth_checkbox_reaches_the_warp_settings() -> None:
    keys = [k for k, _ in ui.ADVANCED]
    values = ui.panel_values("warp")
    assert values[keys.index("warp.keep_depth")] is True
    assert ui.config_from_panel("warp", values).warp.keep_depth is True
    values[keys.index("warp.keep_depth")] = False
    assert ui.config_from_panel("warp", values).warp.keep_depth is False
    assert ui.panel_visible("warp")[keys.index("warp.keep_depth")]
    assert not ui.panel_visible("dragdiffusion")[keys.index("warp.keep_depth")]


def test_the_click_view_draws_handles_red_and_targets_blue_at_display_size() -> None:
    image = Image.new("RGB", (96, 32), (0, 128, 0))
    view = ui.render_points(image, [(10, 16), (80, 16), (50, 5)], None)
    scale = ui.display_scale(image.size)
    assert view.size == ui.display_size(image.size, scale)

    def at(x: int, y: int) -> tuple[int, int, int]:
        return view.getpixel((int((x + 0.5) * scale), int((y + 0.5) * scale)))

    assert at(10, 16) == (255, 0, 0) and at(80, 16) == (0, 0, 255)
    assert at(50, 5) == (255, 0, 0)  # the unpaired handle waits, red
    assert at(40, 28) == (0, 128, 0)


def test_building_the_app_starts_no_server(tmp_path: Path) -> None:
    def factory(model):  # never called: building loads nothing
        raise AssertionError("the model must not load while building the page")

    app = ui.build_app(factory, output_dir=tmp_path / "out")
    assert isinstance(app, gr.Blocks) and not app.is_running
    assert (tmp_path / "out").is_dir()


def test_the_model_is_loaded_once_and_kept() -> None:
    loads: list[str | None] = []

    class Editor:
        def iter_edit(self, *a, **k):  # pragma: no cover - only the type matters here
            raise NotImplementedError

    def factory(model):
        loads.append(model)
        return Editor()

    holder = ui.ModelHolder(factory=factory, model=None)
    first = holder.get(None)
    assert holder.get(None) is first and holder.get("") is first and loads == [None]
    other = holder.get("/some/model")
    assert other is not first and holder.get("/some/model") is other and loads == [None, "/some/model"]
    fixed = ui.ModelHolder(editor=first)
    with pytest.raises(InputError, match="only the model it was started with"):
        fixed.get("/another")


def test_command_line_binds_locally_without_a_tunnel_by_default() -> None:
    from dragdiff.cli import build_parser

    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1" and args.share is False and args.model is None
    args = build_parser().parse_args(["ui", "--host", "0.0.0.0", "--port", "9000", "--share", "--model", "m"])
    assert (args.host, args.port, args.share, args.model) == ("0.0.0.0", 9000, True, "m")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upload(url: str, payload: bytes) -> int:
    boundary = "dragdifftestboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    return _status(request)


def _status(url: str | urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_only_the_output_folder_is_served_and_uploads_are_capped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    app = ui.build_app(lambda model: None, output_dir=out)
    url = ui.serve(app, output_dir=out, port=_free_port(), max_file_size="2kb", block=False)
    try:
        assert url.startswith("http://127.0.0.1:")  # local bind by default
        (out / "edited.txt").write_text("a result")
        assert _status(f"{url}gradio_api/file={out / 'edited.txt'}") == 200
        for outside in (secret, Path(__file__).resolve(), Path("/etc/passwd")):
            assert _status(f"{url}gradio_api/file={outside}") in (403, 404), outside
        assert _upload(url, b"x" * 1000) == 200
        assert _upload(url, b"x" * 5000) == 413  # over max_file_size
    finally:
        ui.close(app)


# --- background LoRA, seeds, live view ---------------------------------------------------------------------


class _LoraEditor:
    """prepare_lora that takes ~2 s unless cancelled, recording the prompt of every run it starts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def iter_edit(self, *a, **k):  # pragma: no cover - only the type matters here
        raise NotImplementedError

    def prepare_lora(self, image, prompt, config):
        self.prompts.append(prompt)
        for step in range(200):
            time.sleep(0.01)
            yield ProgressEvent("lora", step + 1, 200)


def _eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_background_lora_follows_the_prompt_typed_after_the_upload() -> None:
    editor = _LoraEditor()
    warmer = ui.LoraWarmer(ui.ModelHolder(editor=editor))
    image, cfg = Image.new("RGB", (8, 8), "red"), preset("dragdiffusion")
    try:
        warmer.follow("tab", None, image, "", cfg)  # the upload, prompt still empty
        _eventually(lambda: editor.prompts == [""])
        first = warmer.job_for("tab", warmer.job_key(None, image, "", cfg))
        assert first is not None and not first.cancel.is_set()
        for typed in ("a", "a c", "a ca", "a cat"):  # keystrokes: one restart once typing pauses
            warmer.follow("tab", None, image, typed, cfg, delay=0.2)
        _eventually(lambda: editor.prompts == ["", "a cat"])
        assert first.cancel.is_set()  # the adapter for the empty prompt is of no use any more
        assert first.error is None
        job = warmer.job_for("tab", warmer.job_key(None, image, "a cat", cfg))  # Run with that prompt
        assert job is not None and job.key.split("|")[2] == "a cat"
        warmer.follow("tab", None, image, "a cat", cfg, delay=0.0)  # unchanged inputs keep the job
        assert warmer.job_for("tab", job.key) is job and editor.prompts == ["", "a cat"]
        # Run right after another keystroke: the pending restart is dropped, the stale job cancelled
        warmer.follow("tab", None, image, "a dog", cfg, delay=0.2)
        assert warmer.job_for("tab", warmer.job_key(None, image, "a dog", cfg)) is None
        assert job.cancel.is_set()
        time.sleep(0.4)
        assert editor.prompts == ["", "a cat"]  # the edit trains its own adapter; no late background job
    finally:
        warmer.shutdown(5.0)


def test_a_job_shared_by_two_tabs_survives_one_of_them_leaving() -> None:
    editor = _LoraEditor()
    warmer = ui.LoraWarmer(ui.ModelHolder(editor=editor))
    image, cfg = Image.new("RGB", (8, 8), "blue"), preset("dragdiffusion")
    try:
        warmer.follow("a", None, image, "x", cfg)
        warmer.follow("b", None, image, "x", cfg)
        key = warmer.job_key(None, image, "x", cfg)
        job = warmer.job_for("a", key)
        assert job is not None and warmer.job_for("b", key) is job
        warmer.forget("a")
        assert not job.cancel.is_set()
        warmer.forget("b")
        assert job.cancel.is_set()
    finally:
        warmer.shutdown(5.0)


def test_the_seed_fields_map_to_the_edit_seed_and_the_generation_seed() -> None:
    keys = [k for k, _ in ui.ADVANCED]
    values = ui.panel_values("dragdiffusion")
    values[keys.index("seed")] = 7
    values[keys.index("generate.seed")] = 9
    cfg = ui.config_from_panel("dragdiffusion", values)
    assert (cfg.seed, cfg.generate.seed) == (7, 9)
    image = Image.new("RGB", (8, 8))
    # the edit seed drives the identity LoRA's draws, so a new seed is a new background job
    assert ui.LoraWarmer.job_key(None, image, "", cfg) != ui.LoraWarmer.job_key(None, image, "", EditConfig())


def test_every_preview_reaches_the_page_and_the_steps_between_are_drawn_on_it() -> None:
    preview = Image.new("RGB", (8, 8), "green")
    events = [ProgressEvent("drag", i, 30, preview=preview if i % 10 == 0 else None) for i in range(1, 31)]
    ticks = iter(i * 0.1 for i in range(30))  # 0.1 s per iteration: the throttle alone would skip i = 10, 20
    sent = list(ui.live_updates(events, interval=0.25, clock=lambda: next(ticks)))
    steps = [event.step for event, _ in sent]
    assert {10, 20, 30} <= set(steps)  # every decoded preview is shown
    assert all(b - a >= 2 for a, b in zip(steps, steps[1:], strict=False) if b % 10)  # others throttled
    assert all(shown is None for event, shown in sent if event.step < 10)
    assert all(shown is preview for event, shown in sent if event.step >= 10)  # never back to the source


def test_previews_are_decoded_no_more_often_than_updates_are_sent() -> None:
    pace = ui.DragPace()
    assert pace.preview_every(None, 10, 200) == 10  # nothing measured yet: the panel's value
    ticks = iter(i * 0.01 for i in range(100))  # 10 ms per iteration
    events = [ProgressEvent("lora", 1, 1)] + [ProgressEvent("drag", i, 50) for i in range(1, 51)]
    assert len(list(pace.observe(None, events, clock=lambda: next(ticks)))) == 51
    assert pace.preview_every(None, 10, 200) == pytest.approx(ui.UPDATE_INTERVAL_S / 0.01, abs=1)
    assert pace.preview_every(None, 10, 20) == 20  # a short edit still shows its last iteration
    assert pace.preview_every(None, 0, 200) == 0  # no previews asked for: none
    assert pace.preview_every("/other/model", 10, 200) == 10


# --- methods and the warp preview ---------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample.png"


def test_the_method_menu_lists_every_preset_with_its_line_and_starts_at_the_default(monkeypatch) -> None:
    from dragdiff import config

    choices = ui.preset_choices()
    assert [name for _, name in choices] == list(config.PRESETS)  # built from PRESETS, in its order
    for label, name in choices:
        assert label.startswith(f"{name} — ") and len(label) > len(name) + 10 and "{" not in label
    assert "LoRA (80 steps) + 80 drag iterations" in ui.preset_note("dragdiffusion")  # read from the preset
    assert config.PRESETS[ui.default_preset()] == EditConfig()
    # a preset added later is offered too, described by its method until it gets a line of its own
    monkeypatch.setitem(config.PRESETS, "warp-refined", EditConfig(method="warp"))
    assert ("warp-refined — the warp method", "warp-refined") in ui.preset_choices()
    # no preset equal to EditConfig(): the first one that runs its method
    monkeypatch.delitem(config.PRESETS, "dragdiffusion")
    assert config.PRESETS[ui.default_preset()].method == EditConfig().method


def test_the_advanced_panel_shows_the_fields_the_method_reads(monkeypatch) -> None:
    keys = [k for k, _ in ui.ADVANCED]
    warp = dict(zip(keys, ui.panel_visible("warp"), strict=True))
    drag = dict(zip(keys, ui.panel_visible("dragdiffusion"), strict=True))
    assert warp["warp.fill_steps"] and warp["warp.seam_px"] and warp["generate.seed"]
    assert not warp["lora.steps"] and not warp["drag.max_iterations"] and not warp["seed"]
    assert drag["lora.steps"] and drag["seed"] and drag["generate.seed"] and not drag["warp.fill_steps"]
    values = ui.panel_values("warp")
    values[keys.index("warp.fill_steps")] = 8
    cfg = ui.config_from_panel("warp", values)
    assert cfg.method == "warp" and cfg.warp.fill_steps == 8 and cfg.lora == EditConfig().lora
    monkeypatch.delitem(ui.METHOD_SECTIONS, "warp")  # a method the page does not know: every field
    assert all(ui.panel_visible("warp"))


def test_only_a_method_with_an_identity_lora_trains_one_in_the_background() -> None:
    from dragdiff.config import preset

    assert ui.trains_lora(preset("dragdiffusion")) and ui.trains_lora(preset("fast"))
    assert not ui.trains_lora(preset("warp"))
    assert not ui.trains_lora(EditConfig().override(**{"lora.steps": 0}))
    editor = _LoraEditor()
    warmer = ui.LoraWarmer(ui.ModelHolder(editor=editor))
    try:
        image = Image.new("RGB", (8, 8))
        assert warmer.start(None, image, "", preset("warp")) is None
        assert editor.prompts == []
        warmer.follow("tab", None, image, "", preset("dragdiffusion"))  # the upload, dragdiffusion chosen
        job = warmer.job_for("tab", warmer.job_key(None, image, "", preset("dragdiffusion")))
        assert job is not None and not job.cancel.is_set()
        warmer.follow("tab", None, image, "", preset("warp"))  # then warp: that training is of no use
        assert job.cancel.is_set()
    finally:
        warmer.shutdown(5.0)


def _example() -> Image.Image:
    return Image.open(EXAMPLE).convert("RGB")


def test_the_warp_preview_moves_the_content_to_the_target() -> None:
    from dragdiff.config import preset

    image = _example()  # 128 x 128, a red star centred at (64, 64)
    assert ui.render_warp_preview(image, [], None, preset("warp")) == (None, ui.PREVIEW_NONE)
    assert ui.render_warp_preview(image, [(48, 64)], None, preset("warp")) == (None, ui.PREVIEW_NONE)
    shown, text = ui.render_warp_preview(image, [(64, 64), (84, 64)], None, preset("warp"))
    assert shown is not None and text.startswith("**warp preview** of 1 drag")
    scale = ui.display_scale(image.size)
    assert shown.size == ui.display_size(image.size, scale)  # as big as the click view
    src = np.asarray(ui._display(image, scale), np.int16)
    out = np.asarray(shown, np.int16)

    def red_columns(rgb: np.ndarray) -> tuple[int, int]:
        xs = np.nonzero(((rgb[..., 0] > 150) & (rgb[..., 1] < 100)).any(axis=0))[0] // int(scale)
        return int(xs.min()), int(xs.max())

    (left, right) = red_columns(src)
    assert red_columns(out) == (left + 20, right + 20)  # the whole star, 20 px to the right
    assert not (np.abs(out - src).sum(-1) > 30)[120 * int(scale) :].any()  # far below the star: untouched
    assert (out[1, 1] < 90).all() and (src[1, 1] > 200).all()  # the dark "warp preview" band, top left
    # a pending handle after a complete pair changes nothing; the pair alone is previewed
    again, _ = ui.render_warp_preview(image, [(64, 64), (84, 64), (10, 10)], None, preset("warp"))
    assert again is not None and np.array_equal(np.asarray(again), np.asarray(shown))
    _, other = ui.render_warp_preview(image, [(64, 64), (84, 64)], None, preset("dragdiffusion"))
    assert "(dragdiffusion) does not warp" in other


def test_an_impossible_warp_preview_says_why_in_one_line(monkeypatch) -> None:
    from dragdiff.config import preset

    image = _example()
    mask = np.zeros((128, 128), bool)
    mask[:, 80:] = True
    shown, text = ui.render_warp_preview(image, [(64, 64), (84, 64)], mask, preset("warp"))
    assert shown is None and "handle 1 at (64, 64) is outside the editable mask" in text
    crossed = [(47, 39), (67, 39), (24, 56), (90, 56), (71, 56), (20, 56)]  # two tips swap sides
    shown, text = ui.render_warp_preview(image, crossed, None, preset("warp"))
    assert shown is None and "fold" in text and "\n" not in text

    def broken(*args, **kwargs):
        raise RuntimeError("OpenCV(4.x) error:\n  bad input")

    monkeypatch.setattr(ui, "warp_preview", broken)
    shown, text = ui.render_warp_preview(image, [(64, 64), (84, 64)], None, preset("warp"))
    assert shown is None and text == "**warp preview** failed: RuntimeError: OpenCV(4.x) error: bad input"


def test_the_warp_preview_of_a_large_image_is_computed_small(monkeypatch) -> None:
    import dragdiff.geometry.warp as warp
    from dragdiff.config import preset

    seen: list[tuple[tuple[int, int], tuple[float, float], tuple[float, float]]] = []
    real = warp.plan_warp

    def spy(arr, instruction, **options):
        hw = arr.shape[:2]
        seen.append(((hw[1], hw[0]), instruction.handles[0].as_tuple(), instruction.targets[0].as_tuple()))
        return real(arr, instruction, **options)

    monkeypatch.setattr(warp, "plan_warp", spy)
    image = _example().resize((1536, 768))
    mask = np.zeros((768, 1536), bool)
    mask[:, 400:1300] = True
    shown, text = ui.render_warp_preview(image, [(768, 384), (1008, 384)], mask, preset("warp"))
    assert shown is not None and shown.size == ui.display_size(image.size, ui.display_scale(image.size))
    ((size, handle, target),) = seen
    assert max(size) == ui.PREVIEW_MAX and size == (256, 128) and "computed at 256×128" in text
    s = 256 / 1536
    assert handle == pytest.approx((768.5 * s - 0.5, 384.5 * s - 0.5))
    assert target == pytest.approx((1008.5 * s - 0.5, 384.5 * s - 0.5))


class _RecordingEditor:
    """iter_edit that records the config it was given and returns a plain result at once."""

    def __init__(self) -> None:
        self.configs: list[EditConfig] = []
        self.lora_prompts: list[str] = []

    def prepare_lora(self, image, prompt, config):
        self.lora_prompts.append(prompt)
        yield ProgressEvent("lora", 1, 1)

    def iter_edit(self, image, instruction, config=None, stop=None):
        from dragdiff.types import DragResult

        self.configs.append(config)
        record = {"method": config.method}
        result = DragResult(image, image, instruction, instruction.targets, 0, record=record)

        class Run:
            def __iter__(self):
                yield ProgressEvent(config.method, 1, 1)
                self.result = result

        return Run()


def _handler(app, name: str):
    """The page's handler of that name (one function, maybe wired to several events)."""
    (fn,) = {block.fn for block in app.fns.values() if getattr(block.fn, "__name__", "") == name}
    return fn


def test_the_chosen_preset_drives_the_edit_and_a_warp_trains_no_lora(tmp_path: Path) -> None:
    from types import SimpleNamespace

    editor = _RecordingEditor()
    app = ui.build_app(editor, output_dir=tmp_path / "out")
    request = SimpleNamespace(session_hash="tab")
    image = _example()
    value = {"background": np.asarray(image), "layers": [], "composite": None}
    try:
        on_change, on_run = _handler(app, "on_editor_change"), _handler(app, "on_run")
        on_preset, on_preview = _handler(app, "on_preset"), _handler(app, "on_preview")
        panel = ui.panel_values("warp")
        session, *_ = on_change(request, value, ui.Session(), (), "", "", "warp", *panel)
        assert session.image is not None
        points = ((64, 64), (84, 64))
        shown, text = on_preview(session, points, "warp", *panel)
        assert shown is not None and "warp preview" in text
        text, *_, record = list(on_run(request, session, points, value, "", "", "warp", *panel))[-1]
        assert text == "**done** · warp"  # no iteration count: the warp does not optimise
        assert record["method"] == "warp" and editor.configs[-1] == ui.config_from_panel("warp", panel)
        panel = ui.panel_values("fast")
        text, *_, record = list(on_run(request, session, points, value, "", "", "fast", *panel))[-1]
        assert (
            text == "**done** · dragdiffusion · 0 iterations"
            and record["method"] == "dragdiffusion"
            and editor.configs[-1].lora.steps == 30
        )
        updates = on_preset("warp")
        assert [u["visible"] for u in updates] == ui.panel_visible("warp")
        assert [u["value"] for u in updates] == ui.panel_values("warp")
        time.sleep(0.2)
        assert editor.lora_prompts == []  # the warp upload started no identity LoRA
    finally:
        ui.close(app)


def test_the_result_view_outlines_the_region_the_edit_ran_on() -> None:
    from dragdiff import viz
    from dragdiff.types import DragInstruction, DragResult

    image = Image.new("RGB", (2000, 1000), (40, 90, 160))
    ins = DragInstruction.from_pairs([((600, 500), (700, 500))])
    result = DragResult(image, image, ins, ins.targets, 0, record={"roi": [400, 300, 1000, 700]})
    shown = np.asarray(ui.render_result(result))
    s = shown.shape[1] / 2000  # the view is reduced to DISPLAY_MAX
    assert shown.shape[1] == ui.DISPLAY_MAX
    top = shown[round(300 * s), round(400 * s) : round(1000 * s)]  # the box's top edge
    assert (top == viz.ROI).all(axis=-1).any() and (top == (0, 0, 0)).all(axis=-1).any()  # dashed
    assert (shown[round(500 * s), round(700 * s)] == (40, 90, 160)).all()  # inside: the result
    assert (shown[round(100 * s), round(100 * s)] == (40, 90, 160)).all()  # outside: the result too
    assert "edited region 600x400 at (400, 300)" in ui.roi_text(result)
    whole = DragResult(image, image, ins, ins.targets, 0, record={"roi": [0, 0, 2000, 1000]})
    assert not (np.asarray(ui.render_result(whole)) == viz.ROI).all(axis=-1).any()
    assert ui.roi_text(whole) == ""
