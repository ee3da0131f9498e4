"""Configuration: validation errors that name file and key path, safe expressions, hashing,
and the configured pipeline equal to the same public API calls (and to the seed's intent)."""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path

import cv2
import dask
import numpy as np
import pytest

from slidemask.config import (
    DEFAULT_CONFIG_YAML,
    STEPS,
    Config,
    config_from_yaml,
    config_hash,
    default_config,
    load_config,
    parse_config,
    parse_expression,
)
from slidemask.errors import ConfigError, MaskError, SlideError
from slidemask.io import open_slide
from slidemask.ops.local import (
    binary_closing,
    binary_dilation,
    binary_opening,
    hsv_range,
    median_blur,
    threshold,
    to_gray,
)
from slidemask.pipeline import build_mask

from .conftest import SHARED_SLIDES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CMU = SHARED_SLIDES / "CMU-1-Small-Region.svs"

TISSUE = """\
masks:
  tissue:
    - gray: {}
    - threshold: {below: 220}
"""


@pytest.fixture(autouse=True)
def _threads_scheduler():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


def _error(text: str, source: str = "threshold.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text, source=source)
    return str(info.value)


# ---- shipped configurations --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["threshold.yaml", "color.yaml", "pen.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.masks
    assert len(config_hash(config)) == 64


def test_builtin_default_is_configs_pen_yaml() -> None:
    # the demo must work from any directory: it runs a built-in copy kept identical here
    assert (CONFIGS / "pen.yaml").read_text(encoding="utf-8") == DEFAULT_CONFIG_YAML
    assert config_hash(default_config()) == config_hash(load_config(CONFIGS / "pen.yaml"))


# ---- validation errors -------------------------------------------------------------------------


def test_unknown_key_names_file_and_key_path() -> None:
    text = "masks:\n  tissue:\n    - gray: {}\n    - threshold: {abve: 200}\n"
    message = _error(text)
    assert message.startswith("threshold.yaml: masks.tissue[1].threshold.abve: unknown key")
    assert "above, below" in message  # says what is allowed


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TISSUE + "chunksize: 1024\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: chunksize: unknown key"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nothere\.yaml: configuration file not found"):
        load_config(tmp_path / "nothere.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("masks:\n  t:\n    - gray: {}\n    - tresh: {below: 3}\n",
         "masks.t[1].tresh: unknown step 'tresh'; did you mean 'threshold'; known steps: gray"),
        ("masks:\n  t:\n    - gray: {}\n      threshold: {below: 3}\n",
         "masks.t[0]: a step is a one-key mapping, got 2 keys"),
        ("masks:\n  t:\n    - threshold: {below: 3}\n",
         "masks.t[0]: threshold needs a single-channel (grey) image but gets the slide's "
         "colour image (add `- gray: {}` before it)"),
        ("masks:\n  t:\n    - gray: {}\n", "masks.t: ends with a single-channel (grey) image"),
        ("masks:\n  t:\n    - gray: {}\n    - closing: {radius: 2}\n",
         "masks.t[1]: closing needs a bool mask"),
        ("masks:\n  t: []\n", "masks.t: a mask needs at least one step"),
        ("masks:\n  t:\n    - gray: {}\n    - threshold: {below: '200'}\n",
         "masks.t[1].threshold.below: Input should be a valid number (got '200')"),
        ("masks:\n  t:\n    - gray: {}\n    - threshold: {}\n",
         "masks.t[1].threshold: give above:, below: or both"),
        ("masks:\n  t:\n    - gray: {}\n    - threshold: {above: 200, below: 100}\n",
         "masks.t[1].threshold: above (200.0) must be less than below (100.0)"),
        ("masks:\n  t:\n    - gray: {}\n    - median_blur: {ksize: 4}\n",
         "masks.t[1].median_blur.ksize: ksize must be an odd number of pixels >= 3, got 4"),
        ("masks:\n  t:\n    - hsv_range: {lower: [200, 0, 0], upper: [10, 255, 255]}\n",
         "masks.t[0].hsv_range.lower: hue 200 is outside 0-179"),
        ("masks:\n  t:\n    - hsv_range: {lower: [0, 0, 0], upper: [10, 255]}\n",
         "masks.t[0].hsv_range.upper: List should have at least 3 items"),
        ("masks:\n  t:\n    - hsv_range: {lower: [0, 90, 0], upper: [10, 50, 255]}\n",
         "masks.t[0].hsv_range: lower saturation 90 is above upper 50"),
        ("masks:\n  t:\n    - hsv_range: {lower: [0, 0, 0], upper: [10, 255, 255]}\n"
         "    - dilation: {radius: -1}\n",
         "masks.t[1].dilation.radius: Input should be greater than or equal to 0 (got -1)"),
        ("masks:\n  t:\n    - hsv_range: {lower: [0, 0, 0], upper: [10, 255, 255]}\n"
         "    - dilation: {radius: true}\n",
         "masks.t[1].dilation.radius: Input should be a valid integer (got True)"),
        ("masks:\n  2t:\n    - gray\n    - threshold: {below: 3}\n",
         "masks.2t: mask names are identifiers"),
        (TISSUE + "resolution: {level: 1, mpp: 2.0}\n",
         "resolution: give exactly one of level: (pyramid level) or mpp: (µm per pixel)"),
        (TISSUE + "resolution: {lvl: 1}\n",
         "resolution.lvl: unknown key (allowed: level, mpp, downsample)"),
        (TISSUE + "chunk_size: 8\n", "chunk_size: Input should be greater than or equal to 64"),
        (TISSUE + "  pen:\n    - hsv_range: {lower: [100, 80, 30], upper: [128, 255, 255]}\n",
         "output: required key missing: with several masks, say how to combine them"),
        (TISSUE + "output: tissue & ~pen\n", "output: unknown mask 'pen' (defined: tissue)"),
        (TISSUE + "output: tissue and not tissue\n", "output: use & (and), | (or) and ~ (not)"),
        ("masks:\n  tissue: [gray]\n  tissue: [gray]\n", "line 3: duplicate key 'tissue'"),
        ("masks: [a, b\n", "line 2, column 1: not valid YAML"),
        ("", "the configuration is empty"),
        ("- a\n", "the configuration must be a mapping of keys"),
        ("masks: {}\n", "masks: at least one mask is needed"),
    ],
)
def test_errors_name_the_key_path(text: str, expected: str) -> None:
    message = _error(text, source="cfg.yaml")
    assert f"cfg.yaml: {expected}" in message, message


def test_no_masks_is_one_problem() -> None:
    """Without masks there is nothing to combine: no second line asks for an output."""
    assert _error("masks: {}\n", source="cfg.yaml").splitlines() == [
        "cfg.yaml: masks: at least one mask is needed, e.g. tissue: [gray, {threshold: "
        "{below: 220}}]"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "masks:\n  t:\n    - gray: {}\n    - threshold: {abve: 3}\n"
        "    - median_blur: {ksize: 2}\nextra: 1\n"
    )
    lines = _error(text, source="cfg.yaml").splitlines()
    assert len(lines) == 3
    assert all(line.startswith("cfg.yaml: ") for line in lines)


def test_defaults_and_shorthands() -> None:
    config = config_from_yaml("masks:\n  t:\n    - gray\n    - threshold:\n        below: 9\n")
    assert config.output == "t"  # a single mask needs no output expression
    assert config.resolution.level == 0 and config.resolution.mpp is None
    assert config.chunk_size == 2048
    assert [s.name for s in config.masks["t"]] == ["gray", "threshold"]
    assert config.masks["t"][1].kwargs() == {"above": None, "below": 9.0}
    assert config_from_yaml("resolution: {mpp: 8}\n" + TISSUE).resolution.mpp == 8.0


def test_parse_config_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError, match="<config>: the configuration must be a mapping"):
        parse_config([1, 2])
    assert isinstance(parse_config({"masks": {"t": ["gray", {"threshold": {"above": 1}}]}}), Config)


def test_registry_parameters_are_the_functions_keywords() -> None:
    # the config can only say what the public API can: every parameter is a keyword of its
    # function, or the same keyword in micrometres (radius_um -> radius, min_area_um2 ->
    # min_area), converted to pixels before the call
    for name, spec in STEPS.items():
        signature = inspect.signature(spec.function)
        for field in spec.params.model_fields:
            keyword = field.removesuffix("_um2").removesuffix("_um")
            assert keyword in signature.parameters, f"{name}.{field} is not a keyword"


# ---- output expressions -------------------------------------------------------------------------


def test_expression_precedence_and_evaluation() -> None:
    for bits in itertools.product([False, True], repeat=3):
        env = dict(zip("abc", (np.array(b) for b in bits), strict=True))
        a, b, c = bits
        assert parse_expression("a | b & ~c").evaluate(env) == (a or (b and not c))
        assert parse_expression("(a | b) & ~(c)").evaluate(env) == ((a or b) and not c)
        assert parse_expression("~~a").evaluate(env) == a
    assert parse_expression("a|b&~c").names() == {"a", "b", "c"}
    assert str(parse_expression("((a)) | (b & ~c)")) == "a | (b & ~c)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("__import__('os')", "function calls"),
        ("open('x')", "function calls"),
        ("tissue.sum", "attribute access"),
        ("tissue[0]", "indexing"),
        ("tissue & 1", "constants"),
        ("tissue ^ pen", "the operator BitXor"),
        ("tissue - pen", "the operator Sub"),
        ("-tissue", "the operator USub"),
        ("tissue < pen", "comparisons"),
        ("lambda: 1", "lambdas"),
        ("tissue or pen", "instead of the words and/or/not"),
        ("not tissue", "instead of the words and/or/not"),
        ("tissue &", "not a valid expression"),
        ("tissue; pen", "not a valid expression"),
        ("   ", "is required"),
        ("a" + " & a" * 1500, "longer than"),
    ],
)
def test_expression_rejects_everything_else(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_expression(text)
    assert expected in str(info.value)


# ---- hashing ------------------------------------------------------------------------------------


def test_hash_ignores_formatting_and_changes_with_parameters() -> None:
    base = config_from_yaml(
        "masks:\n  t: [gray, {threshold: {below: 220}}]\n  p: [{hsv_range: "
        "{lower: [100, 80, 30], upper: [128, 255, 255]}}]\noutput: t & ~p\n"
    )
    same = config_from_yaml(
        "# a comment\noutput: '((t)) & (~p)'\nmasks:\n  p:\n    - hsv_range:\n"
        "        upper: [128, 255, 255]\n        lower: [100, 80, 30]\n"
        "  t:\n    - gray: {}\n    - threshold: {below: 220.0}\n"
        "resolution: {level: 0}\nchunk_size: 2048\n"
    )
    other = config_from_yaml(
        "masks:\n  t: [gray, {threshold: {below: 221}}]\n  p: [{hsv_range: "
        "{lower: [100, 80, 30], upper: [128, 255, 255]}}]\noutput: t & ~p\n"
    )
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(other)


# ---- the configured pipeline is the public API ------------------------------------------------


def test_build_mask_equals_the_same_api_calls(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide, chunk_size=512)
    mask, provenance = build_mask(slide, default_config())
    rgb = slide.levels[0]
    tissue = binary_closing(threshold(median_blur(to_gray(rgb), 7), below=220), 4)
    blue = binary_dilation(binary_opening(hsv_range(rgb, [100, 80, 30], [128, 255, 255]), 3), 5)
    green = binary_dilation(binary_opening(hsv_range(rgb, [40, 60, 30], [85, 255, 255]), 3), 5)
    expected = tissue & ~(blue | green)
    assert mask.dtype == np.bool_ and mask.shape == rgb.shape[:2]
    assert mask.chunks == rgb.chunks[:2]
    computed, reference = dask.compute(mask, expected)
    np.testing.assert_array_equal(computed, reference)
    assert 0.05 < computed.mean() < 0.95
    assert provenance["level"] == 0 and provenance["downsample"] == 1.0
    assert provenance["mpp"] == pytest.approx(0.5)
    assert provenance["source"]["path"] == str(slide.path)
    assert provenance["masks"]["tissue"][1] == {"median_blur": {"ksize": 7}}
    assert provenance["output"] == "tissue & ~(blue_pen | green_pen)"
    assert provenance["config_hash"] == config_hash(default_config())


def test_resolution_picks_the_level(synthetic_slide: Path) -> None:
    slide = open_slide(synthetic_slide)
    config = config_from_yaml("resolution: {level: 1}\n" + TISSUE)
    mask, provenance = build_mask(slide, config)
    assert mask.shape == slide.levels[1].shape[:2]
    assert provenance["level"] == 1 and provenance["downsample"] == pytest.approx(2.0)
    mask, provenance = build_mask(slide, config_from_yaml("resolution: {mpp: 1.1}\n" + TISSUE))
    assert provenance["level"] == 1 and provenance["mpp"] == pytest.approx(1.0)
    mask, provenance = build_mask(slide, config_from_yaml("resolution: {mpp: 4.0}\n" + TISSUE))
    assert (provenance["level"], provenance["factor"]) == (2, 2)
    assert provenance["mpp"] == pytest.approx(4.0) and provenance["downsample"] == 8.0
    assert mask.shape == (1536 // 8, 2048 // 8)
    with pytest.raises(MaskError, match="level 9 does not exist"):
        build_mask(slide, config_from_yaml("resolution: {level: 9}\n" + TISSUE))


def test_mpp_needs_a_slide_that_states_it(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(32, 32), photometric="rgb")
    with pytest.raises(SlideError, match="does not state its pixel size") as raised:
        build_mask(open_slide(path), config_from_yaml("resolution: {mpp: 8}\n" + TISSUE))
    # the message says how to state one, as well as how to do without
    assert "--mpp" in str(raised.value) and "default_mpp" in str(raised.value)
    assert "level" in str(raised.value)


def test_default_mpp_serves_only_slides_that_state_none(tmp_path: Path) -> None:
    import tifffile

    from slidemask import run_slide, write_synthetic_slide
    from slidemask.cli import main
    from slidemask.writers.zarr import read_attrs

    rgb = np.full((256, 256, 3), 240, np.uint8)
    rgb[64:192, 64:192] = 120
    bare = tmp_path / "nompp.tif"
    tifffile.imwrite(bare, rgb, tile=(64, 64), photometric="rgb")
    stated = write_synthetic_slide(tmp_path / "stated.tif", 256, tile=64, levels=1, mpp=0.5)
    text = "resolution: {mpp: 2}\n" + TISSUE
    plain, guessed = config_from_yaml(text), config_from_yaml(text + "default_mpp: 1.0\n")
    assert "default_mpp" not in plain.canonical()  # older configs keep their hash
    assert config_hash(guessed) != config_hash(plain)
    out = tmp_path / "out"
    assert run_slide(bare, plain, out).status == "failed"
    done = run_slide(bare, guessed, out)
    assert done.status == "done", done.error
    provenance = read_attrs(done.output)["provenance"]
    assert provenance["mpp"] == pytest.approx(2.0) and provenance["factor"] == 2
    assert provenance["default_mpp"] == 1.0 and provenance["source"]["mpp"] == 1.0
    # a slide's own pixel size wins: 0.5 um, so 2 um is 4 level-0 pixels
    own = read_attrs(run_slide(stated, guessed, out).output)["provenance"]
    assert own["source"]["mpp"] == 0.5 and own["factor"] == 4
    # the command line's --mpp is the same setting; a nonsense value is a usage error
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert main(["run", str(config), "-i", str(bare), "-o", str(tmp_path / "cli"), "-q"]) == 1
    assert main(["run", str(config), "-i", str(bare), "-o", str(tmp_path / "cli"), "-q",
                 "--mpp", "1"]) == 0
    assert main(["run", str(config), "-i", str(bare), "-o", str(tmp_path / "cli"), "-q",
                 "--mpp", "-1"]) == 2
    with pytest.raises(ConfigError, match="default_mpp"):
        config_from_yaml(text + "default_mpp: 0\n")


def test_step_errors_name_slide_and_step(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "u16.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16), tile=(32, 32))
    config = config_from_yaml("masks:\n  t:\n    - gray: {}\n    - threshold: {below: 70000}\n")
    with pytest.raises(MaskError, match=r"u16\.tif: masks\.t\[1\]\.threshold: .*outside"):
        build_mask(open_slide(path), config)


@pytest.mark.skipif(not CMU.exists(), reason="shared/slides not present")
def test_threshold_yaml_is_the_seed_corrected_on_a_real_slide() -> None:
    # seed: skimage as_gray floats in [0, 1] compared with 128; corrected: uint8 luma < 128
    slide = open_slide(CMU, chunk_size=512)
    mask, _ = build_mask(slide, load_config(CONFIGS / "threshold.yaml"))
    rgb = slide.levels[0].compute()
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < 128
    np.testing.assert_array_equal(mask.compute(), expected)
    assert 0.05 < expected.mean() < 0.95


@pytest.mark.skipif(not CMU.exists(), reason="shared/slides not present")
def test_color_yaml_is_the_seed_corrected_on_a_real_slide() -> None:
    # seed: rgb2hsv in [0, 1] against OpenCV bounds; corrected: OpenCV HSV throughout
    slide = open_slide(CMU, chunk_size=512)
    mask, _ = build_mask(slide, load_config(CONFIGS / "color.yaml"))
    rgb = slide.levels[0].compute()
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    expected = cv2.inRange(hsv, np.array([110, 50, 50]), np.array([130, 255, 255])) > 0
    np.testing.assert_array_equal(mask.compute(), expected)
    assert expected.any()


def test_numbers_with_an_exponent_are_numbers() -> None:
    """YAML 1.1 reads 1e4 as text; here it is the number, as in YAML 1.2, JSON and Python."""
    config = config_from_yaml(
        "resolution: {mpp: 8}\n"
        "masks:\n  t: [gray, {threshold: {below: 2.2e2}},"
        " {remove_small_objects: {min_area_um2: 1e4}}]\n"
    )
    assert config.masks["t"][1].kwargs()["below"] == 220.0
    assert config.masks["t"][2].kwargs()["min_area_um2"] == 10000.0


@pytest.mark.parametrize(("text", "expected"), [
    ("masks:\n  t: [gray, {threshold: {below: .nan}}]\n",
     "masks.t[1].threshold.below: Input should be a finite number or 'otsu' (got nan)"),
    ("resolution: {mpp: .inf}\nmasks:\n  t: [gray, {threshold: {below: 9}}]\n",
     "resolution.mpp: Input should be a finite number"),
    ("masks:\n  t: [gray, {median_blurr: {ksize: 3}}]\n", "did you mean 'median_blur'"),
    ("mask:\n  t: [gray]\n", "mask: unknown key (allowed: resolution, masks"),
    ("masks:\n  t: [gray, {threshold: {below: 9}}]\ntiles: {size: 256, min_fracton: 0.5}\n",
     "tiles.min_fracton: unknown key (allowed: size"),
])
def test_the_check_catches_it_before_any_slide(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text)
    assert expected in str(info.value)


def test_a_mask_no_output_uses_is_named_in_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    # the CLI's tests may have set the package logger not to propagate (to caplog's handler)
    monkeypatch.setattr(logging.getLogger("slidemask"), "propagate", True)
    text = ("masks:\n  t: [gray, {threshold: {below: 9}}]\n"
            "  u: [gray, {threshold: {below: 8}}]\noutput: t\n")
    with caplog.at_level("WARNING", logger="slidemask"):
        config_from_yaml(text)
    assert any("masks u are named by neither output nor classes" in r.getMessage()
               for r in caplog.records)


def test_a_wrong_precedence_names_the_entries() -> None:
    text = (Path(__file__).resolve().parents[1] / "configs" / "qc.yaml").read_text()
    text = text.replace("precedence: [border, pen, fold, bubble, blur, tissue]",
                        "precedence: [border, pen, fold, bubble, blur, tissue, ink, pen]")
    with pytest.raises(ConfigError, match="'ink' is not a class; 'pen' is named twice"):
        config_from_yaml(text)


def test_a_radius_under_half_a_pixel_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from slidemask import write_synthetic_slide

    monkeypatch.setattr(logging.getLogger("slidemask"), "propagate", True)
    path = write_synthetic_slide(tmp_path / "s.tif", 512, tile=128, levels=3)
    config = config_from_yaml("resolution: {mpp: 8}\nmasks:\n  t: [gray, {threshold: {below: "
                              "220}}, {closing: {radius_um: 3}}]\n")
    with caplog.at_level("WARNING", logger="slidemask"):
        build_mask(open_slide(path), config)
    assert any("masks.t[2].closing: radius_um 3.0 is under half a pixel" in r.getMessage()
               for r in caplog.records)
