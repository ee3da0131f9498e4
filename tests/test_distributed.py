"""Execution back ends: config validation, job scripts without a scheduler, loopback clusters.

Cluster tests share one 2-process LocalCluster on 127.0.0.1 (a few seconds to start) and run
only the small top-level functions in tests/_distributed_tasks.py.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from pydantic import ValidationError

from slidemask.distributed import (
    SCHEDULER_PLACEHOLDER,
    ExecutionConfig,
    Executor,
    TaskOutcome,
    execution_context,
    job_script,
    jobqueue_kwargs,
)
from slidemask.errors import ConfigError
from tests import _distributed_tasks as tasks

# --- configuration ----------------------------------------------------------------------------


def test_defaults():
    cfg = ExecutionConfig()
    assert cfg.scheduler == "threads" and cfg.kind == "threads"
    assert cfg.workers is None and cfg.threads_per_worker == 1 and cfg.retries == 0


@pytest.mark.parametrize(
    ("value", "kind"),
    [("threads", "threads"), (" Processes ", "processes"), ("SLURM", "slurm"), ("pbs", "pbs"),
     ("tcp://127.0.0.1:8786", "address"), ("tcp://node-7.cluster:8786", "address"),
     ("tls://[::1]:8786", "address")],
)
def test_scheduler_values(value: str, kind: str):
    extra = {"cores": 4, "memory": "8GiB"} if kind in ("slurm", "pbs") else {}
    assert ExecutionConfig(scheduler=value, **extra).kind == kind


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scheduler": "mpi"}, "unknown scheduler"),
        ({"scheduler": "tcp://host"}, "tcp://host:port"),
        ({"scheduler": "http://host:8786"}, "tcp://host:port"),
        ({"scheduler": "tcp://host:99999"}, "tcp://host:port"),
        ({"workers": 0}, "greater than or equal to 1"),
        ({"threads_per_worker": 0}, "greater than or equal to 1"),
        ({"memory_limit": "lots"}, "not a memory size"),
        ({"memory_limit": "0GiB"}, "positive"),
        ({"memory_limit": "200MiB"}, "too little for a worker process"),
        ({"walltime": "two hours"}, "walltime"),
        ({"walltime": 14400}, "quoted"),
        ({"worker": 2}, "Extra inputs are not permitted"),
        ({"scheduler": "slurm", "memory": "8GiB"}, "needs cores"),
        ({"scheduler": "pbs"}, "needs cores and memory"),
        ({"scheduler": "slurm", "cores": 6, "memory": "8GiB", "threads_per_worker": 4},
         "multiple of threads_per_worker"),
        ({"scheduler": "slurm", "cores": 4, "memory": "8GiB", "jobs": 2, "workers": 4},
         "either workers or jobs"),
    ],
)
def test_invalid_configs(data: dict[str, object], message: str):
    with pytest.raises(ValidationError, match=message):
        ExecutionConfig(**data)


def test_shipped_slurm_example_renders():
    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "slurm.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = ExecutionConfig(**data["execution"])
    script = job_script(cfg)
    assert "#SBATCH --cpus-per-task=16" in script and "--nworkers 8" in script
    assert "#SBATCH -t 04:00:00" in script and "module load python/3.11" in script
    assert "\npython -m distributed.cli.dask_worker" in script


def test_valid_resource_strings():
    cfg = ExecutionConfig(scheduler="slurm", cores=8, memory="32 GB", memory_limit="auto",
                          walltime="1-12:00:00")
    assert cfg.walltime == "1-12:00:00"


# --- job scripts without a scheduler ----------------------------------------------------------


SLURM = ExecutionConfig(
    scheduler="slurm", cores=8, memory="32GiB", walltime="02:30:00", queue="short",
    account="path-lab", threads_per_worker=2, job_extra_directives=["--exclusive"],
    job_script_prologue=["module load python/3.11"], local_directory="$TMPDIR",
    log_directory="logs",
)


def test_slurm_job_script_has_the_resources():
    script = job_script(SLURM)
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for directive in ("#SBATCH -J slidemask", "#SBATCH -p short", "#SBATCH -A path-lab",
                      "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH -t 02:30:00",
                      "#SBATCH --exclusive", "#SBATCH -e logs/", "#SBATCH -o logs/"):
        assert any(line.startswith(directive) for line in lines), directive
    assert "module load python/3.11" in lines
    export = next(line for line in lines if "DASK_INTERNAL_INHERIT_CONFIG" in line)
    assert lines.index(export) < lines.index("module load python/3.11")
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert SCHEDULER_PLACEHOLDER in worker
    # 8 cores / 2 threads per worker = 4 worker processes, each one slide at a time
    for option in ("--nworkers 4", "--nthreads 2", "--memory-limit 8.00GiB",
                   "--resources slide=1", "--local-directory $TMPDIR"):
        assert option in worker, option


def test_pbs_job_script_has_the_resources():
    cfg = SLURM.model_copy(update={"scheduler": "pbs", "queue": "workq",
                                   "job_extra_directives": ["-l place=excl"]})
    lines = job_script(cfg).splitlines()
    for directive in ("#PBS -N slidemask", "#PBS -q workq", "#PBS -A path-lab",
                      "#PBS -l select=1:ncpus=8:mem=", "#PBS -l walltime=02:30:00",
                      "#PBS -l place=excl"):
        assert any(line.startswith(directive) for line in lines), directive
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nworkers 4" in worker and "--resources slide=1" in worker


def test_job_script_needs_a_job_queue():
    with pytest.raises(ConfigError, match="slurm or pbs"):
        job_script(ExecutionConfig(scheduler="processes"))


@pytest.mark.timeout(60)
def test_job_script_matches_what_the_cluster_would_submit():
    from dask_jobqueue import SLURMCluster

    # Loopback scheduler, no dashboard, no jobs submitted (no scale): nothing needs sbatch.
    with SLURMCluster(
        **jobqueue_kwargs(SLURM),
        scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
    ) as cluster:
        real = cluster.job_script()

    def normalise(script: str) -> str:
        script = re.sub(r"tcp://\S+", "ADDRESS", script)
        return re.sub(r"--name \S+", "--name NAME", script)

    assert normalise(real) == normalise(job_script(SLURM))


# --- in-process (threads) ---------------------------------------------------------------------


def test_threads_runs_in_order_and_isolates_failures():
    seen: list[int] = []
    with execution_context(ExecutionConfig(workers=3)) as ex:
        assert ex.dashboard_link is None
        out = ex.map(tasks.square_or_raise, [(i, 2) for i in range(5)],
                     on_done=lambda o: seen.append(o.index))
        inside = ex.map(tasks.scheduler_inside_task, [()])[0].value
    assert seen == [0, 1, 2, 3, 4]
    assert [o.value for o in out] == [0, 1, None, 9, 16]
    assert [o.ok for o in out] == [True, True, False, True, True]
    assert out[2].error == "ValueError: slide 2 is corrupt"
    assert out[2].traceback is not None and "square_or_raise" in out[2].traceback
    assert inside is not None
    assert inside[:3] == ("threads", 3, 4096) and inside[3] == os.getpid()
    assert dask.config.get("num_workers", None) is None  # restored afterwards


# --- a loopback LocalCluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    cfg = ExecutionConfig(scheduler="processes", workers=2, threads_per_worker=2,
                          memory_limit="1GiB")
    with execution_context(cfg) as ex:
        yield ex


@pytest.mark.timeout(90)
def test_processes_results_in_order_with_one_failure(cluster: Executor):
    done: list[TaskOutcome[int]] = []
    out = cluster.map(tasks.square_or_raise, [(i, 3) for i in range(8)],
                      labels=[f"slide {i}/x" for i in range(8)], on_done=done.append)
    assert [o.index for o in out] == list(range(8))
    assert [o.value for o in out] == [0, 1, 4, None, 16, 25, 36, 49]
    assert out[3].error == "ValueError: slide 3 is corrupt"
    assert "square_or_raise" in (out[3].traceback or "")
    assert sorted(o.index for o in done) == list(range(8))
    assert "LocalCluster, 2 worker processes" in cluster.description
    assert cluster.dashboard_link is None or cluster.dashboard_link.startswith("http://127.0.0.1:")


@pytest.mark.timeout(90)
def test_processes_compute_with_threads_inside_worker(cluster: Executor):
    out = cluster.map(tasks.scheduler_inside_task, [(), ()])
    for outcome in out:
        assert outcome.ok, outcome.traceback
        scheduler, threads, total, pid = outcome.value  # type: ignore[misc]
        assert (scheduler, threads, total) == ("threads", 2, 4096)
        assert pid != os.getpid()


@pytest.mark.timeout(90)
def test_local_workers_keep_glibc_malloc_defaults(cluster: Executor):
    """distributed's MALLOC_TRIM_THRESHOLD_ (which makes chunk-sized arrays page-fault anew
    each time, about 2x slower here) is not set on slidemask's local workers."""
    expected = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # one set by the user is passed on
    out = cluster.map(tasks.malloc_trim_setting, [(0,), (1,)])
    assert [o.value for o in out] == [expected, expected]


@pytest.mark.timeout(90)
def test_local_workers_are_never_paused(cluster: Executor):
    """A worker over 80 % of its memory limit is not paused (a paused worker with a slide
    over the limit waited for ever); over 95 % it is still restarted and the slide fails."""
    out = cluster.map(tasks.memory_pause_setting, [(0,), (1,)])
    assert [o.value for o in out] == [False, False]


@pytest.mark.timeout(90)
def test_connect_to_a_running_scheduler(cluster: Executor):
    address = cluster.client.scheduler.address  # type: ignore[attr-defined]
    with execution_context(ExecutionConfig(scheduler=address)) as ex:
        assert address in ex.description
        assert [o.value for o in ex.map(tasks.square, [(2,), (3,)])] == [4, 9]
    # leaving the context disconnects but leaves that scheduler running
    assert [o.value for o in cluster.map(tasks.square, [(4,)])] == [16]


@pytest.mark.timeout(60)
def test_unreachable_scheduler_is_a_config_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(ConfigError, match="cannot reach"):
            with execution_context(ExecutionConfig(scheduler=f"tcp://127.0.0.1:{port}")):
                pass


def expected_mask(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 2, size=4096, dtype=np.uint8).tobytes()


@pytest.mark.timeout(120)
def test_killed_worker_is_survived_with_identical_output(cluster: Executor, tmp_path: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    marker = tmp_path / "killed-once"
    never = tmp_path / "never"
    never.write_text("exists, so these tasks do not die")
    arguments = [(str(out_dir), f"m{i}", i, str(marker if i == 2 else never)) for i in range(4)]

    out = cluster.map(tasks.write_mask_dying_once, arguments)

    assert marker.exists()  # the first attempt of task 2 really killed its worker process
    assert int(marker.read_text()) != os.getpid()
    assert all(o.ok for o in out), [o.error for o in out]
    assert [Path(o.value).name for o in out] == ["m0.bin", "m1.bin", "m2.bin", "m3.bin"]  # type: ignore[arg-type]
    for i in range(4):
        assert (out_dir / f"m{i}.bin").read_bytes() == expected_mask(i)
    assert sorted(p.name for p in out_dir.iterdir()) == ["m0.bin", "m1.bin", "m2.bin", "m3.bin"]
    # the cluster still works afterwards (the nanny restarted the worker)
    assert [o.value for o in cluster.map(tasks.square, [(5,), (6,)])] == [25, 36]


@pytest.mark.timeout(120)
def test_task_that_always_kills_its_worker_fails_alone():
    # The scheduler reads allowed-failures when it starts: 0 fails the task at its first death.
    cfg = ExecutionConfig(scheduler="processes", workers=1, memory_limit="1GiB")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with execution_context(cfg) as ex:
            out = ex.map(tasks.die, [(1,)])
            after = ex.map(tasks.square, [(3,)])
    assert out[0].error is not None and out[0].error.startswith("KilledWorker: ")
    assert "out of memory" in out[0].error
    assert after[0].value == 9


FAKE_SBATCH = """#!/usr/bin/env bash
# Stand-in for sbatch: run the job script in the background in its own session and print
# its pid as the job id. The script is copied first: dask-jobqueue deletes it on return.
copy="$(mktemp)"
cp "${@: -1}" "$copy"
setsid bash "$copy" > "$FAKE_SLURM_DIR/job-$$.log" 2>&1 < /dev/null &
echo "Submitted batch job $!"
"""

FAKE_SCANCEL = """#!/usr/bin/env bash
for id in "$@"; do kill -TERM -- "-$id" 2>/dev/null || kill -TERM "$id" 2>/dev/null; done
exit 0
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid (util-linux)")
@pytest.mark.parametrize(("scheduler", "command"), [("slurm", "sbatch"), ("pbs", "qsub")])
def test_a_cluster_scheduler_without_its_submit_command_is_a_usage_error(
    scheduler: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off the cluster, dask-jobqueue fails inside a thread and the run waits: refused first."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no qsub
    cfg = ExecutionConfig(scheduler=scheduler, cores=2, memory="2GiB", walltime="00:10:00")
    with pytest.raises(ConfigError, match=f"execution.scheduler: .*`{command}`.*not on"):
        with execution_context(cfg):
            pass


def test_slurm_run_with_a_stand_in_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The real SLURM code path (cluster, scale, job script, worker resources) with sbatch
    # replaced by a script that runs the job on this machine.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    repo = Path(__file__).resolve().parents[1]
    cfg = ExecutionConfig(
        scheduler="slurm", cores=2, memory="2GiB", walltime="00:10:00", jobs=1,
        # the job's workers must import tests._distributed_tasks
        job_script_prologue=[f"export PYTHONPATH={repo}"],
    )
    with execution_context(cfg) as ex:
        assert "SLURM jobs of 2 cores" in ex.description
        out = ex.map(tasks.square_or_raise, [(i, 2) for i in range(5)])
        inside = ex.map(tasks.scheduler_inside_task, [()])[0]
        trim = ex.map(tasks.malloc_trim_setting, [(0,)])[0]
    logs = "".join(p.read_text() for p in tmp_path.glob("job-*.log"))
    # the job's workers keep glibc's malloc defaults (distributed sets 65536 otherwise)
    assert trim.ok and trim.value == os.environ.get("MALLOC_TRIM_THRESHOLD_"), logs
    assert [o.value for o in out] == [0, 1, None, 9, 16], logs
    assert out[2].error == "ValueError: slide 2 is corrupt"
    assert inside.ok and inside.value is not None
    assert inside.value[:3] == ("threads", 1, 4096) and inside.value[3] != os.getpid()


@pytest.mark.timeout(120)
def test_engine_runs_on_the_distributed_scheduler(
    cluster: Executor, synthetic_slide: Path, tmp_path: Path
):
    """Global and neighbourhood steps (scratch stores and reads on worker processes) and a
    slide-wide Otsu give the whole-image answer under dask.distributed."""
    import slidemask as sm

    client = getattr(cluster, "client", None)
    if client is None:
        pytest.skip("this executor has no distributed client")
    slide = sm.open_slide(synthetic_slide, chunk_size=128)
    grey = sm.to_gray(slide.levels[1])
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        mask = sm.threshold(grey, above=sm.otsu_threshold(grey))
        mask = sm.remove_small_objects(sm.fill_holes(sm.binary_closing(mask, 2)), 20)
    got = mask.compute(scheduler=client)
    whole = grey.compute()
    ref = da.from_array(whole, chunks=whole.shape)
    expected = sm.threshold(ref, above=sm.otsu_threshold(ref))
    expected = sm.remove_small_objects(sm.fill_holes(sm.binary_closing(expected, 2)), 20)
    np.testing.assert_array_equal(got, expected.compute())


@pytest.mark.timeout(300)  # above the 180 s the restarted worker is given at the end
def test_batch_survives_a_worker_killed_mid_slide(cluster: Executor, tmp_path: Path):
    """A batch of slides on the LocalCluster: one worker process is killed (SIGKILL, as the
    OOM killer does) while it runs a slide. The scheduler runs that slide again elsewhere,
    the batch completes, and every mask is the one a clean run writes."""
    import signal
    import threading
    import time

    from slidemask.batch import run_batch
    from slidemask.config import config_from_yaml
    from slidemask.io.synthetic import write_synthetic_slide
    from slidemask.writers.zarr import is_complete, read_mask

    client = getattr(cluster, "client", None)
    if client is None:
        pytest.skip("this executor has no distributed client")
    slides = [write_synthetic_slide(tmp_path / f"k{i}.ome.tif", 2048, tile=256, levels=1, seed=i)
              for i in range(4)]
    config = config_from_yaml(
        "masks: {tissue: [gray, {median_blur: {ksize: 7}}, {threshold: {below: 210}}, "
        "{closing: {radius: 3}}]}\nchunk_size: 512\n"
    )
    clean = run_batch(slides, config, tmp_path / "clean")  # this process, threads
    assert [r.status for r in clean] == ["done"] * 4

    def executing(dask_worker) -> list[str]:  # runs on each worker
        return [str(ts.key) for ts in dask_worker.state.executing]

    pids = client.run(os.getpid)
    killed: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def unwritten(key: str) -> bool:
        """Whether a task key is a slide whose mask is not written yet: killed mid-slide
        (a kill after the write is another case, see tests/test_batch.py)."""
        for slide in slides:
            if f"slide-{slide.name}-" in key:
                return not (tmp_path / "out" / f"{slide.name.split('.')[0]}.zarr").exists()
        return False

    def kill_one_worker_mid_slide() -> None:
        while not stop.is_set() and not killed:
            for address, keys in client.run(executing).items():
                if any(unwritten(key) for key in keys):
                    os.kill(pids[address], signal.SIGKILL)
                    killed.append((address, keys))
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker_mid_slide, daemon=True)
    address = client.scheduler.address
    killer.start()
    try:
        results = run_batch(slides, config, tmp_path / "out",
                            execution=ExecutionConfig(scheduler=address))
    finally:
        stop.set()
        killer.join(timeout=10)
    assert killed, "no worker was killed while it ran a slide"
    assert [r.status for r in results] == ["done"] * 4, [r.error for r in results]
    for slide in slides:
        name = f"{slide.name.split('.')[0]}.zarr"
        assert is_complete(tmp_path / "out" / name)
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / name).compute(),
                                      read_mask(tmp_path / "clean" / name).compute())
    # the nanny restarts the killed worker (a fresh process importing distributed and
    # slidemask: over 30 s once on a busy 2-core machine, and past the test's former 120 s
    # limit once on a machine losing its cores to steal time); the cluster serves the other
    # tests
    client.wait_for_workers(2, timeout=180)
    assert [o.value for o in cluster.map(tasks.square, [(7,)])] == [49]


def test_tasks_sharing_a_worker_leave_its_settings_as_they_found_them() -> None:
    """Two slides running at once in one worker process (a ``dask.distributed`` worker with
    two threads): whichever finishes first, both run on the threaded scheduler with the
    batch's threads, and the process's dask and OpenCV settings are restored after both."""
    import threading

    import cv2
    from dask.threaded import get as threaded_get

    from slidemask.distributed import run_task

    before = (dask.config.get("scheduler", None), dask.config.get("num_workers", None),
              cv2.getNumThreads())
    for first_to_finish in ("a", "b"):
        started = {name: threading.Event() for name in "ab"}
        release = {name: threading.Event() for name in "ab"}
        seen: dict[str, tuple[object, object, int]] = {}

        def slide(name: str, started=started, release=release, seen=seen) -> None:
            started[name].set()
            release[name].wait(10)
            seen[name] = (dask.config.get("scheduler", None),
                          dask.config.get("num_workers", None), cv2.getNumThreads())

        threads = [threading.Thread(target=run_task, args=(slide, (name,), {}, 1))
                   for name in "ab"]
        threads[0].start()
        started["a"].wait(10)
        threads[1].start()
        started["b"].wait(10)
        order = "ab" if first_to_finish == "a" else "ba"
        for name in order:
            release[name].set()
            threads["ab".index(name)].join(10)
        assert seen == {name: (threaded_get, 1, 1) for name in "ab"}
        assert (dask.config.get("scheduler", None), dask.config.get("num_workers", None),
                cv2.getNumThreads()) == before


def test_scratch_roots_are_per_thread(tmp_path: Path) -> None:
    """``scratch_in`` (what run_slide uses for a slide's scratch beside its output) changes
    where graphs built in this thread put scratch, not dask's setting for the process."""
    import threading

    from slidemask.ops.scratch import scratch_in, scratch_root

    default = scratch_root()
    seen: dict[str, str] = {}
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        with scratch_in(tmp_path / "b"):
            ready.set()
            done.wait(10)
            seen["b"] = scratch_root()

    worker = threading.Thread(target=other)
    worker.start()
    ready.wait(10)
    with scratch_in(tmp_path / "a"):
        seen["a"] = scratch_root()
        assert dask.config.get("temporary-directory", None) is None or \
            dask.config.get("temporary-directory") != str(tmp_path / "a")
    done.set()
    worker.join(10)
    assert seen == {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}
    assert scratch_root() == default
