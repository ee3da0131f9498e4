"""glibc's malloc arena cap: set once by the slide runners, never over the user's choice; the
imported modules' objects frozen out of the garbage collector's scans on the first run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slidemask.memory import limit_malloc_arenas

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the cap is glibc's (Linux)"
)


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
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
