"""Where a batch of slides runs: this process, a LocalCluster, a Dask scheduler, SLURM or PBS.

This is the one module that imports ``dask.distributed`` and ``dask_jobqueue``; both are
imported only when a cluster is actually needed, so reading a config stays fast.

Model
-----
One **task per slide**. A task runs a top-level function (importable by worker processes,
never a closure or something defined in ``__main__``) that opens the slide itself, computes
its mask with dask's *threaded* scheduler inside the worker, and writes the output under a
temporary name before renaming it into place. Processes therefore pay off *across* slides,
threads *inside* one (PERF-NOTES 11), and a task that runs twice (because its worker died and
the scheduler re-ran it elsewhere) gives the same output as one clean run.

==============  =======================================================================
``scheduler``   what happens
==============  =======================================================================
``threads``     no cluster: slides one after another in this process, each with
                ``workers`` threads (default: all CPUs available to this process)
``processes``   a loopback ``LocalCluster`` of ``workers`` processes, each running one
                slide at a time with ``threads_per_worker`` threads, at most
                ``memory_limit`` each
``tcp://h:p``   an existing Dask scheduler; its workers must be able to import slidemask
``slurm/pbs``   dask-jobqueue: ``jobs`` batch jobs of ``cores`` CPUs and ``memory``, each
                running ``cores // threads_per_worker`` worker processes
==============  =======================================================================

Failure handling: an exception inside a task is captured as that task's
:class:`TaskOutcome` and never stops the others. A worker process that dies (killed, out of
memory) has its task re-run on another worker by the scheduler, up to
``distributed.scheduler.allowed-failures`` times (default 3) before the task fails with
``KilledWorker``; ``retries`` additionally re-runs tasks that *raised*.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
import traceback as tb_module
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import dask
from dask.system import CPU_COUNT
from dask.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slidemask.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = [
    "JOB_QUEUES",
    "SCHEDULER_PLACEHOLDER",
    "ExecutionConfig",
    "Executor",
    "TaskOutcome",
    "default_workers",
    "execution_context",
    "job_script",
    "jobqueue_kwargs",
    "run_task",
    "worker_event_sender",
]

T = TypeVar("T")

SchedulerName = Literal["threads", "processes", "slurm", "pbs"]
JOB_QUEUES: tuple[str, ...] = ("slurm", "pbs")
SCHEDULER_PLACEHOLDER = "tcp://SCHEDULER-ADDRESS:8786"
"""Stands in for the scheduler address in a job script rendered without a running scheduler."""
JOB_NAME = "slidemask"
SLIDE_RESOURCE = "slide"
"""Abstract worker resource: job-queue workers hold one, so each runs one slide at a time."""

_ADDRESS_RE = re.compile(
    r"^(?P<scheme>tcp|tls)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$"
)
# SLURM and PBS both accept [D-]HH:MM:SS and shorter forms such as MM or HH:MM.
_WALLTIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class ExecutionConfig(BaseModel):
    """The ``execution:`` section of a config: where and how concurrently slides run.

    Memory sizes are strings with units (``"4GiB"``, ``"16 GB"``); ``walltime`` is
    ``[D-]HH:MM:SS``. Job-queue fields (``cores`` .. ``log_directory``) are used only with
    ``slurm``/``pbs`` and ignored otherwise; left unset, dask-jobqueue's own configuration
    (``~/.config/dask/jobqueue.yaml``) applies.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    scheduler: SchedulerName | str = Field(
        "threads",
        description="threads, processes, slurm, pbs, or the address tcp://host:port of a "
        "running Dask scheduler",
    )
    workers: int | None = Field(
        None, ge=1,
        description="threads: threads per slide (default all CPUs); processes: worker "
        "processes (default CPUs // threads_per_worker); slurm/pbs: total worker processes "
        "to scale to (alternative to jobs)",
    )
    threads_per_worker: int = Field(
        1, ge=1, description="threads each worker process uses for its one slide at a time"
    )
    memory_limit: str | None = Field(
        None,
        description="processes: memory limit per worker process (default: system memory "
        "divided among workers); slurm/pbs derive it from memory / processes per job",
    )
    retries: int = Field(
        0, ge=0, description="extra attempts for a slide task that raised (cluster schedulers)"
    )
    cores: int | None = Field(None, ge=1, description="slurm/pbs: CPUs per job")
    memory: str | None = Field(None, description="slurm/pbs: memory per job, e.g. '32GiB'")
    walltime: str | None = Field(None, description="slurm/pbs: time limit per job, HH:MM:SS")
    queue: str | None = Field(None, description="slurm partition / pbs queue")
    account: str | None = Field(None, description="account or project charged for the jobs")
    jobs: int | None = Field(None, ge=1, description="slurm/pbs: jobs to start (default 1)")
    job_extra_directives: list[str] = Field(
        default_factory=list, description="extra #SBATCH / #PBS directives, e.g. '--exclusive'"
    )
    job_script_prologue: list[str] = Field(
        default_factory=list,
        description="shell lines run before the worker starts, e.g. 'module load python'",
    )
    interface: str | None = Field(
        None, description="network interface workers and scheduler use, e.g. 'ib0'"
    )
    python: str | None = Field(
        None,
        description="slurm/pbs: Python on the compute nodes (default: the interpreter running "
        "slidemask, which suits a shared file system)",
    )
    local_directory: str | None = Field(None, description="worker scratch / spill directory")
    log_directory: str | None = Field(None, description="slurm/pbs: where job logs go")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _check_scheduler(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        name = value.strip()
        if name.lower() in ("threads", "processes", *JOB_QUEUES):
            return name.lower()
        if "://" not in name:
            raise ValueError(
                f"unknown scheduler {value!r}: use threads, processes, slurm, pbs or the "
                "address of a running Dask scheduler, tcp://host:port"
            )
        match = _ADDRESS_RE.match(name)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(
                f"scheduler address {value!r} must look like tcp://host:port (or tls://)"
            )
        return name

    @field_validator("memory_limit", "memory")
    @classmethod
    def _check_bytes(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        try:
            n = parse_bytes(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{value!r} is not a memory size such as '4GiB'") from exc
        if n <= 0:
            raise ValueError(f"{value!r} must be a positive memory size")
        if n < MIN_WORKER_MEMORY:
            raise ValueError(
                f"{value!r} is too little for a worker process: its libraries alone take about "
                f"200 MiB before any slide; give at least {MIN_WORKER_MEMORY // 2**20}MiB"
            )
        return value

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime_is_text(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 04:00:00 as the number 14400 (base 60)
            raise ValueError(
                f"walltime must be quoted text like '04:00:00', got the number {value!r} "
                "(YAML reads unquoted HH:MM:SS as a number)"
            )
        return value

    @field_validator("walltime")
    @classmethod
    def _check_walltime(cls, value: str | None) -> str | None:
        if value is not None and not _WALLTIME_RE.match(value.strip()):
            raise ValueError(f"walltime {value!r} must look like HH:MM:SS or D-HH:MM:SS")
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _check_job_queue(self) -> ExecutionConfig:
        if self.scheduler not in JOB_QUEUES:
            return self
        missing = [k for k in ("cores", "memory") if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"scheduler {self.scheduler!r} needs {' and '.join(missing)} (per job)"
            )
        assert self.cores is not None
        if self.cores % self.threads_per_worker:
            raise ValueError(
                f"cores ({self.cores}) must be a multiple of threads_per_worker "
                f"({self.threads_per_worker})"
            )
        if self.workers is not None and self.jobs is not None:
            raise ValueError("set either workers or jobs for a job queue, not both")
        return self

    @property
    def kind(self) -> Literal["threads", "processes", "address", "slurm", "pbs"]:
        """The scheduler's kind; ``"address"`` for a ``tcp://``/``tls://`` scheduler."""
        if self.scheduler in ("threads", "processes", "slurm", "pbs"):
            return self.scheduler  # type: ignore[return-value]
        return "address"


@dataclass(frozen=True)
class TaskOutcome(Generic[T]):
    """One task's result or the reason it has none.

    ``error`` is ``"ExceptionType: message"`` and ``traceback`` the formatted traceback when
    the task raised, its worker died too often (``KilledWorker``) or it was cancelled.
    """

    index: int
    value: T | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


OnDone = Callable[[TaskOutcome[Any]], None]


class Executor:
    """Runs independent tasks (one per slide) and returns their outcomes in input order."""

    dashboard_link: str | None = None
    """URL of the Dask dashboard, or ``None`` without a cluster."""
    description: str = ""
    """One line saying where tasks run, for logs."""

    def map(
        self,
        func: Callable[..., T],
        arguments: Sequence[tuple[Any, ...]],
        *,
        keywords: Sequence[Mapping[str, Any]] | None = None,
        labels: Sequence[str] | None = None,
        on_done: OnDone | None = None,
    ) -> list[TaskOutcome[T]]:
        """Run ``func(*args)`` for each tuple in ``arguments``.

        Parameters
        ----------
        func
            A module-level function (workers import it by name). It should return its result
            (for example a :class:`slidemask.report.SlideResult`) and may raise.
        arguments
            One tuple of picklable positional arguments per task; pass paths, not open files.
        keywords
            Keyword arguments per task (same length as ``arguments``), e.g.
            ``{"output": ..., "overwrite": False}`` for :func:`slidemask.pipeline.run_slide`.
        labels
            Short names shown on the dashboard (for example slide names).
        on_done
            Called in this process with each outcome as its task finishes (completion order),
            for progress bars and log lines.

        Returns
        -------
        list of TaskOutcome
            In the order of ``arguments``; a raising task never stops the others.
        """
        raise NotImplementedError

    @contextmanager
    def subscribe(self, topic: str, handler: Callable[[Any], None]) -> Iterator[None]:
        """Call ``handler(message)`` in this process for each event tasks send on ``topic``
        (with the sender :func:`worker_event_sender` gives them) while the block runs.

        Tasks running in this process send nothing (they report directly); with a cluster,
        ``handler`` runs on the client's event-loop thread, so it must be quick and
        thread-safe.
        """
        yield


def worker_event_sender(topic: str) -> Callable[[Any], None] | None:
    """In a task on a ``dask.distributed`` worker: a function sending a message on ``topic``
    to the clients subscribed to it (:meth:`Executor.subscribe`); None anywhere else.

    Messages must be msgpack-serializable (dicts of str, numbers, lists). Call it at the start
    of the task, in the task's thread; the function it returns may be called from any thread.
    """
    if "distributed" not in sys.modules:  # no worker can be running in this process
        return None
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return None

    def send(message: Any) -> None:
        worker.log_event(topic, message)

    return send


def run_task(
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    threads: int | None,
) -> T:
    """Run ``func(*args, **kwargs)`` with dask's threaded scheduler and ``threads`` threads.

    Inside a ``dask.distributed`` worker, ``compute()`` would otherwise go back to the cluster
    (the worker's client), where a one-thread worker waiting on its own sub-tasks can stall.
    OpenCV's own thread pool is held to the same number of threads while the task runs, so a
    worker uses the cores it was given (by default OpenCV uses every core of the machine,
    which oversubscribes a node shared by several workers or jobs).

    Both settings are the process's, and a worker with several threads runs several slides
    at once: the first task to start applies them and the last to finish restores them (set
    and restored by each task, two slides' interleaved restores left a worker on the
    one-thread scheduler after the batch).
    """
    with _task_settings(threads):
        return func(*args, **kwargs)


_TASKS_LOCK = threading.Lock()
_TASKS: dict[str, Any] = {"running": 0}
"""What :func:`_task_settings` applied in this process, and how many tasks run under it."""


@contextmanager
def _task_settings(threads: int | None) -> Iterator[None]:
    """dask's threaded scheduler with ``threads`` workers and OpenCV's pool of ``threads``,
    while any task of :func:`run_task` runs in this process (the first one's ``threads``)."""
    import cv2
    from dask.threaded import get as threaded_get

    with _TASKS_LOCK:
        if _TASKS["running"] == 0:
            _TASKS["opencv"] = cv2.getNumThreads()
            if threads is not None:
                cv2.setNumThreads(threads)
            # the scheduler function itself, not the name "threads": for a name, dask imports
            # distributed on every compute to look for a client (0.3 s of each batch process)
            _TASKS["config"] = dask.config.set(scheduler=threaded_get, num_workers=threads)
        _TASKS["running"] += 1
    try:
        yield
    finally:
        with _TASKS_LOCK:
            _TASKS["running"] -= 1
            if _TASKS["running"] == 0:
                _TASKS.pop("config").__exit__(None, None, None)
                cv2.setNumThreads(_TASKS.pop("opencv"))


def _keywords(
    arguments: Sequence[tuple[Any, ...]], keywords: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    if keywords is None:
        return [{} for _ in arguments]
    if len(keywords) != len(arguments):
        raise ValueError(f"{len(keywords)} keyword mappings for {len(arguments)} tasks")
    return [dict(k) for k in keywords]


def _error_text(exc: BaseException) -> str:
    if type(exc).__name__ == "KilledWorker":
        return (
            "KilledWorker: the worker process died every time it ran this task (often out of "
            "memory: raise memory_limit, or lower threads_per_worker or chunk_size)"
        )
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")


class _InProcessExecutor(Executor):
    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self.description = f"this process, {threads or CPU_COUNT} threads per slide"

    def map(
        self,
        func: Callable[..., T],
        arguments: Sequence[tuple[Any, ...]],
        *,
        keywords: Sequence[Mapping[str, Any]] | None = None,
        labels: Sequence[str] | None = None,
        on_done: OnDone | None = None,
    ) -> list[TaskOutcome[T]]:
        kwargs_list = _keywords(arguments, keywords)
        outcomes: list[TaskOutcome[T]] = []
        for index, args in enumerate(arguments):
            start = time.perf_counter()
            try:
                value = run_task(func, tuple(args), kwargs_list[index], self.threads)
            except Exception as exc:
                outcome: TaskOutcome[T] = TaskOutcome(
                    index, error=_error_text(exc), traceback=tb_module.format_exc(),
                    seconds=time.perf_counter() - start,
                )
            else:
                outcome = TaskOutcome(index, value=value, seconds=time.perf_counter() - start)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
        return outcomes


class _ClientExecutor(Executor):
    def __init__(
        self,
        client: Client,
        *,
        threads: int | None,
        retries: int,
        resources: dict[str, float] | None,
        description: str,
    ) -> None:
        self.client = client
        self.threads = threads
        self.retries = retries
        self.resources = resources
        self.description = description
        try:
            self.dashboard_link = client.dashboard_link
        except Exception:  # no dashboard service on that scheduler
            self.dashboard_link = None

    def map(
        self,
        func: Callable[..., T],
        arguments: Sequence[tuple[Any, ...]],
        *,
        keywords: Sequence[Mapping[str, Any]] | None = None,
        labels: Sequence[str] | None = None,
        on_done: OnDone | None = None,
    ) -> list[TaskOutcome[T]]:
        from distributed import as_completed

        kwargs_list = _keywords(arguments, keywords)
        if labels is not None and len(labels) != len(arguments):
            raise ValueError(f"{len(labels)} labels for {len(arguments)} tasks")
        index_of: dict[object, int] = {}
        submitted: dict[object, float] = {}
        futures: list[Future] = []
        for index, args in enumerate(arguments):
            label = str(index) if labels is None else re.sub(r"[^\w.]+", "_", labels[index])[:60]
            # Keys are unique per submission: a rerun of the same slide is a new task.
            key = f"slide-{label}-{uuid.uuid4().hex}"
            future = self.client.submit(
                run_task, func, tuple(args), kwargs_list[index], self.threads,
                key=key, pure=False, retries=self.retries, resources=self.resources,
            )
            index_of[future.key] = index
            submitted[future.key] = time.perf_counter()
            futures.append(future)
        outcomes: list[TaskOutcome[T] | None] = [None] * len(futures)
        try:
            for future in as_completed(futures, loop=self.client.loop):
                outcome = _collect(future, index_of[future.key], submitted[future.key])
                outcomes[outcome.index] = outcome
                future.release()  # lets the scheduler forget the result now
                if on_done is not None:
                    on_done(outcome)
        except BaseException:
            self.client.cancel(futures)
            raise
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    @contextmanager
    def subscribe(self, topic: str, handler: Callable[[Any], None]) -> Iterator[None]:
        # events arrive as (scheduler time, message)
        self.client.subscribe_topic(topic, lambda event: handler(event[1]))
        try:
            yield
        finally:
            self.client.unsubscribe_topic(topic)


def _collect(future: Future, index: int, submitted: float) -> TaskOutcome[Any]:
    seconds = time.perf_counter() - submitted  # includes queueing: the task's own time is unknown
    try:
        if future.status == "error":
            exc = future.exception()
            trace = future.traceback()
            text = "".join(tb_module.format_exception(type(exc), exc, trace))
            return TaskOutcome(index, error=_error_text(exc), traceback=text, seconds=seconds)
        if future.status == "cancelled":
            return TaskOutcome(index, error="CancelledError: task cancelled", seconds=seconds)
        return TaskOutcome(index, value=future.result(), seconds=seconds)
    except Exception as exc:  # e.g. the result could not be unpickled
        return TaskOutcome(
            index, error=_error_text(exc), traceback=tb_module.format_exc(), seconds=seconds
        )


MIN_WORKER_MEMORY = 512 * 2**20
"""The least ``memory_limit`` (and ``memory``) accepted, bytes. A worker process holds about
200 MiB of libraries (dask, distributed, zarr, OpenCV, tifffile) before it reads a slide, and
dask pauses a worker at 80 % of its limit: with ``--memory-limit 200MiB`` the first slide
finished, the worker stayed paused, and the run never ended."""


def default_workers(threads_per_worker: int = 1) -> int:
    """Worker processes for ``processes`` when ``workers`` is unset: CPUs // threads each."""
    return max(1, CPU_COUNT // threads_per_worker)


def _local_cluster(cfg: ExecutionConfig) -> Any:
    from distributed import LocalCluster

    kwargs: dict[str, Any] = dict(
        n_workers=cfg.workers or default_workers(cfg.threads_per_worker),
        # One slide per worker at a time: the slide's own threads come from run_task.
        threads_per_worker=1,
        memory_limit=cfg.memory_limit or "auto",
        processes=True,
        host="127.0.0.1",
    )
    if cfg.local_directory:
        kwargs["local_directory"] = cfg.local_directory
    with dask.config.set(WORKER_ENVIRON):
        try:
            return LocalCluster(dashboard_address=":0", **kwargs)
        except Exception:  # the dashboard is optional; a cluster without it still runs
            return LocalCluster(dashboard_address=None, **kwargs)


WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                  "distributed.worker.memory.pause": False}
"""Dask configuration for the worker processes slidemask starts itself.

``dask.distributed`` starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, to hand freed
memory back to the OS sooner. Setting any trim threshold also turns off glibc's dynamic mmap
threshold, so every chunk-sized numpy array is then a fresh ``mmap`` whose pages fault in
again. Measured on a 2-core machine, one 12000² slide (median 7, threshold, closing 4) in a
1-thread worker: 4.1 s with that setting, 1.7-2.0 s without it (2.0 s in a plain process).
slidemask's memory is bounded by its chunking, not by returning freed pages, so its workers
keep glibc's defaults: local ones through this configuration (``None`` removes the variable;
one set in the environment of the process that starts the cluster is still passed on), SLURM
and PBS ones through a line the job script exports (:func:`jobqueue_kwargs`).

Pausing is off too: dask pauses a worker whose memory passes 80 % of its limit until it falls
again, and a slide task that is over it never falls while it waits; a worker over its limit is
still restarted at 95 %, and its slide then fails (``KilledWorker``) instead of waiting for
ever."""


def _worker_config_export() -> str:
    """A job-script line that gives the job's nanny :data:`WORKER_ENVIRON`.

    Dask's ``DASK_*`` environment variables lower-case their keys, so they cannot reach the
    upper-case ``MALLOC_TRIM_THRESHOLD_`` entry; ``DASK_INTERNAL_INHERIT_CONFIG`` (the
    serialized configuration dask itself hands to subprocesses) keeps it as it is."""
    nested: dict[str, Any] = {}
    for dotted, value in WORKER_ENVIRON.items():
        node = nested
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return f"export DASK_INTERNAL_INHERIT_CONFIG={dask.config.serialize(nested)}"


def _jobqueue_class(cfg: ExecutionConfig) -> Any:
    if cfg.scheduler == "slurm":
        from dask_jobqueue import SLURMCluster

        return SLURMCluster
    from dask_jobqueue import PBSCluster

    return PBSCluster


def jobqueue_kwargs(cfg: ExecutionConfig) -> dict[str, Any]:
    """Keyword arguments for dask-jobqueue's cluster (and job) class; unset ones are left out.

    Each job runs ``cores // threads_per_worker`` worker processes of ``threads_per_worker``
    threads, and each worker holds one ``slide`` resource so it runs one slide at a time.
    """
    if cfg.kind not in JOB_QUEUES:
        raise ConfigError(
            f"execution.scheduler is {cfg.scheduler!r}; a job script needs slurm or pbs"
        )
    assert cfg.cores is not None
    kwargs: dict[str, Any] = {
        "cores": cfg.cores,
        "memory": cfg.memory,
        "processes": cfg.cores // cfg.threads_per_worker,
        "job_name": JOB_NAME,
        "worker_extra_args": ["--resources", f"{SLIDE_RESOURCE}=1"],
    }
    optional = {
        "walltime": cfg.walltime,
        "queue": cfg.queue,
        "account": cfg.account,
        "interface": cfg.interface,
        "python": cfg.python,
        "local_directory": cfg.local_directory,
        "log_directory": cfg.log_directory,
        "job_extra_directives": list(cfg.job_extra_directives) or None,
        # workers keep glibc's malloc defaults, as local ones do (WORKER_ENVIRON)
        "job_script_prologue": [_worker_config_export(), *cfg.job_script_prologue],
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    return kwargs


def job_script(cfg: ExecutionConfig) -> str:
    """The batch script one job would run, rendered without a scheduler or sbatch/qsub.

    The worker command's scheduler address is :data:`SCHEDULER_PLACEHOLDER` because the real
    one exists only once a run starts its scheduler; everything else (directives, resources,
    prologue, worker options) is exactly what a run submits.
    """
    kwargs = jobqueue_kwargs(cfg)
    # The job class renders the script on its own; building the cluster would start a scheduler.
    job_cls = _jobqueue_class(cfg).job_cls
    job = job_cls(scheduler=SCHEDULER_PLACEHOLDER, name=f"{JOB_NAME}-worker", **kwargs)
    script: str = job.job_script()
    return script


@contextmanager
def execution_context(cfg: ExecutionConfig) -> Iterator[Executor]:
    """Start what ``cfg`` asks for, yield an :class:`Executor`, and shut it all down on exit.

    ``threads`` starts nothing. ``processes`` starts a LocalCluster on 127.0.0.1 (about 1-2 s;
    call this under ``if __name__ == "__main__":`` in scripts, because workers are spawned).
    A ``tcp://`` address connects to that scheduler and leaves it running. ``slurm``/``pbs``
    start a scheduler in this process and submit ``jobs`` jobs (or enough for ``workers``);
    they are cancelled on exit.

    Raises
    ------
    ConfigError
        The scheduler address cannot be reached.
    """
    kind = cfg.kind
    if kind == "threads":
        yield _InProcessExecutor(cfg.workers)
        return

    from distributed import Client

    resources: dict[str, float] | None = None
    with ExitStack() as stack:
        if kind == "processes":
            cluster = _local_cluster(cfg)
            stack.callback(cluster.close)
            n = len(cluster.workers)
            client = Client(cluster, set_as_default=False)
            description = (
                f"LocalCluster, {n} worker processes x {cfg.threads_per_worker} threads, "
                f"memory limit {cfg.memory_limit or 'auto'} each"
            )
        elif kind == "address":
            try:
                # waits up to distributed.comm.timeouts.connect (30 s by default)
                client = Client(cfg.scheduler, set_as_default=False)
            except OSError as exc:
                raise ConfigError(
                    f"execution.scheduler: cannot reach the Dask scheduler at "
                    f"{cfg.scheduler}: {exc}"
                ) from exc
            description = f"Dask scheduler at {cfg.scheduler}"
        else:
            submit = "sbatch" if kind == "slurm" else "qsub"
            if shutil.which(submit) is None:  # else dask-jobqueue fails in a thread and waits
                raise ConfigError(
                    f"execution.scheduler: {kind} submits jobs with `{submit}`, which is not "
                    "on this machine's PATH: run on the cluster's login node, or choose "
                    "scheduler: threads (or local) here"
                )
            cluster = _jobqueue_class(cfg)(**jobqueue_kwargs(cfg))
            stack.callback(cluster.close)
            if cfg.workers is not None:
                cluster.scale(n=cfg.workers)
            else:
                cluster.scale(jobs=cfg.jobs or 1)
            client = Client(cluster, set_as_default=False)
            resources = {SLIDE_RESOURCE: 1}
            description = (
                f"{kind.upper()} jobs of {cfg.cores} cores and {cfg.memory}, "
                f"{jobqueue_kwargs(cfg)['processes']} worker processes each"
            )
        stack.callback(client.close)
        yield _ClientExecutor(
            client,
            threads=cfg.threads_per_worker,
            retries=cfg.retries,
            resources=resources,
            description=description,
        )

