"""Start-up: ``import slidemask`` and ``slidemask --help/--version`` load no heavy dependency.

The public names of the package load lazily (PEP 562); these tests check, in fresh
interpreters, which modules an import pulls in, and that every public name still resolves.
There are no timing assertions (shared machines are too noisy); see issue 10 for the targets.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import slidemask
from slidemask._version import UNKNOWN_VERSION
from slidemask.cli import main

HEAVY = ("distributed", "dask_jobqueue", "ome_zarr", "shapely", "skimage", "scipy")
"""Never imported by ``import slidemask``."""

CLI_HEAVY = (*HEAVY, "dask", "numpy", "pydantic", "yaml", "zarr", "cv2", "tifffile")
"""Not imported by ``import slidemask`` nor by ``slidemask --help`` / ``--version``."""


def _loaded_after(code: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after running ``code`` in a fresh Python."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        "print(json.dumps(sorted({name.partition('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def _installed_version() -> str:
    try:
        return version("slidemask")
    except PackageNotFoundError:
        return UNKNOWN_VERSION


def test_import_loads_no_heavy_module() -> None:
    loaded = _loaded_after("import slidemask")
    assert "slidemask" in loaded
    assert loaded.isdisjoint(CLI_HEAVY), sorted(loaded & set(CLI_HEAVY))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"]])
def test_help_and_version_load_no_heavy_module(argv: list[str]) -> None:
    loaded = _loaded_after(
        "import contextlib, io\n"
        "from slidemask.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({argv!r}) == 0\n"
    )
    assert loaded.isdisjoint(CLI_HEAVY), sorted(loaded & set(CLI_HEAVY))


def test_a_local_run_loads_no_cluster_module(tmp_path: Path) -> None:
    """``slidemask run`` on threads (no cluster configured) imports neither distributed nor
    dask-jobqueue: dask would import distributed on each compute to look for a client, 0.3 s
    of every batch process."""
    slide = tmp_path / "s.ome.tif"
    config = tmp_path / "c.yaml"
    config.write_text("masks: {tissue: [gray, {threshold: {below: 220}}]}\n")
    loaded = _loaded_after(
        "import contextlib, io\n"
        "from slidemask import write_synthetic_slide\n"
        "from slidemask.cli import main\n"
        f"write_synthetic_slide({str(slide)!r}, 256, tile=128)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['run', {str(config)!r}, '-i', {str(slide)!r}, '-o', "
        f"{str(tmp_path / 'out')!r}, '-q']) == 0\n"
    )
    assert "dask" in loaded and loaded.isdisjoint({"distributed", "dask_jobqueue"})


def test_the_qc_preset_in_chunks_loads_no_cluster_module(tmp_path: Path) -> None:
    """``configs/qc.yaml`` (every artifact step, blur's rechunked cell grid) on a chunked
    working image imports no distributed: dask's rechunk would, to look for a client."""
    slide = tmp_path / "s.ome.tif"
    config = tmp_path / "qc.yaml"
    text = (Path(__file__).resolve().parents[1] / "configs" / "qc.yaml").read_text()
    config.write_text(text.replace("chunk_size: 2048", "chunk_size: 64"))
    loaded = _loaded_after(
        "import contextlib, io, dask\n"
        "from slidemask import write_synthetic_slide\n"
        "from slidemask.cli import main\n"
        f"write_synthetic_slide({str(slide)!r}, 2048, tile=256)\n"
        "with dask.config.set({'slidemask.whole-image-pixels': 0}), "
        "contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['run', {str(config)!r}, '-i', {str(slide)!r}, '-o', "
        f"{str(tmp_path / 'out')!r}, '-q']) == 0\n"
    )
    assert "dask" in loaded and loaded.isdisjoint({"distributed", "dask_jobqueue"})


@pytest.mark.parametrize("scheduler", [None, "threads", "sync"])
def test_api_writers_load_no_cluster_module(tmp_path: Path, scheduler: str | None) -> None:
    """The public API's writers, on a global step, with dask's default scheduler or one named
    in dask's config, do not import distributed (dask itself would, 0.6-0.8 s on a process's
    first compute, to look for a client)."""
    slide = tmp_path / "s.ome.tif"
    setting = "" if scheduler is None else f"dask.config.set(scheduler={scheduler!r})\n"
    loaded = _loaded_after(
        "import dask\n"
        f"{setting}"
        "import slidemask as sm\n"
        f"sm.write_synthetic_slide({str(slide)!r}, 256, tile=128)\n"
        f"level = sm.open_slide({str(slide)!r}).levels[0]\n"
        "mask = sm.fill_holes(sm.threshold(sm.to_gray(level), below=220))\n"
        f"sm.write_zarr(mask, {str(tmp_path / 'm.zarr')!r})\n"
        f"sm.write_geojson(mask, {str(tmp_path / 'm.geojson')!r})\n"
    )
    assert "dask" in loaded and loaded.isdisjoint({"distributed", "dask_jobqueue"})


def test_version_option_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"slidemask {_installed_version()}\n"
    assert slidemask.__version__ == _installed_version()


def test_version_needs_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    # a command is otherwise required (exit 2), as with --help
    assert main([]) == 2
    capsys.readouterr()
    assert main(["--version", "info"]) == 0
    assert capsys.readouterr().out.startswith("slidemask ")


def test_help_mentions_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out


def test_python_dash_m_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slidemask", "--version"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"slidemask {_installed_version()}\n"
    result = subprocess.run(
        [sys.executable, "-m", "slidemask"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "usage: slidemask" in result.stderr


def test_from_import_loads_the_definition() -> None:
    from slidemask import ConfigError, fill_holes, threshold
    from slidemask.errors import ConfigError as defined_error
    from slidemask.ops.holes import fill_holes as defined_fill
    from slidemask.ops.local import threshold as defined_threshold

    assert threshold is defined_threshold
    assert fill_holes is defined_fill
    assert ConfigError is defined_error


def test_dir_lists_all_public_names() -> None:
    names = dir(slidemask)
    assert set(slidemask.__all__) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", slidemask.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(slidemask, name)
    assert value is not None
    if name != "__version__":  # the submodule's own object, not a copy
        assert getattr(importlib.import_module(slidemask._LAZY[name]), name) is value


def test_star_import_gives_all_names() -> None:
    namespace: dict[str, object] = {}
    exec("from slidemask import *", namespace)
    assert set(slidemask.__all__) <= set(namespace)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = slidemask.no_such_name  # type: ignore[attr-defined]
    assert not hasattr(slidemask, "no_such_name")



def test_global_operations_load_no_scipy_csgraph() -> None:
    """fill_holes, remove_small_objects, label and keep_largest on a lazy chunked mask,
    computed: their kernels and merges join components in numpy (importing
    ``scipy.sparse.csgraph`` costs 0.13 s and 9 MiB in each process)."""
    probe = (
        "import sys\n"
        "import numpy as np, dask.array as da, slidemask as sm\n"
        "rng = np.random.default_rng(0)\n"
        "m = da.from_array(rng.random((300, 260)) < 0.45, chunks=(64, 70))\n"
        "sm.remove_small_objects(sm.fill_holes(m), 5).compute()\n"
        "sm.label(m).compute()\n"
        "sm.keep_largest(m, 2).compute()\n"
        "print('scipy.sparse.csgraph' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split()[-1] == "False"
