"""glibc's malloc arena cap and thresholds: set once by the slide runners and the first
computation, never over the user's choice; the imported modules' objects frozen out of the
garbage collector's scans on the first run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slidemask.memory import limit_malloc_arenas

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the cap is glibc's (Linux)"
)


_MALLOC_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                     "GLIBC_TUNABLES")


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in _MALLOC_VARIABLES}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, check=True, timeout=120)
    return done.stdout.strip()


@glibc
def test_the_cap_is_set_once_and_passed_to_child_processes() -> None:
    code = ("import os; from slidemask.memory import limit_malloc_arenas as f; "
            "print(f(), f(), os.environ.get('MALLOC_ARENA_MAX'))")
    assert _run(code) == f"True True {(os.cpu_count() or 1) + 1}"


@glibc
def test_the_users_setting_wins() -> None:
    code = ("import os; from slidemask.memory import limit_malloc_arenas as f; "
            "print(f(), os.environ['MALLOC_ARENA_MAX'])")
    assert _run(code, MALLOC_ARENA_MAX="8") == "False 8"


@glibc
def test_run_slide_sets_the_cap(tmp_path) -> None:
    code = f"""
import os
from slidemask import run_slide, write_synthetic_slide
from slidemask.config import config_from_yaml
path = write_synthetic_slide({str(tmp_path / "s.tif")!r}, 256, tile=128, levels=1)
print(os.environ.get("MALLOC_ARENA_MAX"), end=" ")
config = config_from_yaml("masks: {{tissue: [gray, {{threshold: {{below: 220}}}}]}}")
result = run_slide(path, config, {str(tmp_path / "out")!r})
print(result.status, os.environ.get("MALLOC_ARENA_MAX"))
"""
    assert _run(code) == f"None done {(os.cpu_count() or 1) + 1}"


@glibc
def test_the_thresholds_are_set_once_and_passed_to_child_processes() -> None:
    code = ("import os; from slidemask.memory import tune_malloc as f; "
            "print(f(), f(), os.environ.get('MALLOC_MMAP_THRESHOLD_'), "
            "os.environ.get('MALLOC_TRIM_THRESHOLD_'), os.environ.get('MALLOC_ARENA_MAX'))")
    assert _run(code) == f"True True {2**25} {2**25} {(os.cpu_count() or 1) + 1}"


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}])
def test_the_users_thresholds_win(env: dict[str, str]) -> None:
    code = ("import os; from slidemask.memory import tune_malloc as f; "
            "print(f(), os.environ.get('MALLOC_MMAP_THRESHOLD_'))")
    assert _run(code, **env) == f"False {env.get('MALLOC_MMAP_THRESHOLD_')}"


@glibc
def test_freed_blocks_are_kept_for_reuse_once_tuned() -> None:
    # blocks of 2 MiB allocated and freed: with glibc's defaults each one's pages are
    # faulted in again (up to a raised threshold); tuned, they are reused
    code = """
import resource
import numpy as np
from slidemask.memory import tune_malloc
def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        block = np.ones((512, 512))
        twice = block * 2
        del block, twice
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
held = [np.ones(2**20) for _ in range(3)]  # never freed: glibc's threshold stays low
before = faults()
tune_malloc()
print(before > 10000, faults() < 2000)
"""
    assert _run(code) == "True True"


@glibc
def test_the_first_computation_of_a_lazy_mask_tunes_malloc(tmp_path) -> None:
    code = f"""
import gc
import os
import dask.array as da
import numpy as np
import slidemask as sm
mask = sm.threshold(da.from_array(np.arange(256, dtype=np.uint8).reshape(16, 16), chunks=8),
                    below=100)
print(os.environ.get("MALLOC_MMAP_THRESHOLD_"), gc.get_freeze_count() == 0, end=" ")
sm.write_zarr(mask, {str(tmp_path / "m.zarr")!r})
print(os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_ARENA_MAX"),
      gc.get_freeze_count() > 10000)
"""
    # the public API runs as a configuration does: malloc tuned, the imported modules'
    # objects out of the garbage collector's full scans (slidemask.memory.prepare_process)
    assert _run(code) == f"None True {2**25} {(os.cpu_count() or 1) + 1} True"


@pytest.mark.parametrize("writer", ["write_ome_labels", "write_geojson", "write_preview"])
def test_every_public_writer_prepares_the_process(tmp_path, writer) -> None:
    code = f"""
import gc
import dask.array as da
import numpy as np
import slidemask as sm
slide = sm.open_slide(sm.write_synthetic_slide({str(tmp_path / "s.tif")!r}, 64, tile=32,
                                               levels=1))
mask = sm.threshold(sm.to_gray(slide.levels[0]), below=220)
print(gc.get_freeze_count() == 0, end=" ")
out = {str(tmp_path / "out")!r}
if {writer!r} == "write_preview":
    sm.write_preview(slide, mask, out + ".png", mask_downsample=1.0)
elif {writer!r} == "write_ome_labels":
    sm.write_ome_labels(mask, out + ".ome.zarr", mpp=0.5)
else:
    sm.write_geojson(mask, out + ".geojson")
print(gc.get_freeze_count() > 10000)
"""
    assert _run(code) == "True True"


def test_count_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="count must be an integer >= 1"):
            limit_malloc_arenas(bad)  # type: ignore[arg-type]


def test_the_first_run_freezes_the_startup_objects_once(tmp_path) -> None:
    code = f"""
import gc
from slidemask import run_slide, write_synthetic_slide
from slidemask.config import config_from_yaml
from slidemask.memory import freeze_startup_objects
path = write_synthetic_slide({str(tmp_path / "s.tif")!r}, 256, tile=128, levels=1)
print(gc.get_freeze_count() == 0, end=" ")
config = config_from_yaml("masks: {{tissue: [gray, {{threshold: {{below: 220}}}}]}}")
result = run_slide(path, config, {str(tmp_path / "out")!r})
print(result.status, gc.get_freeze_count() > 10000, freeze_startup_objects())
"""
    assert _run(code) == "True done True False"
