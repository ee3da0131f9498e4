"""Slides and outputs on object storage (``s3://``, ``gs://``, ``https://``, ...) through fsspec.

Anything that names a slide or an output may be a URL. Options for the file systems come from
the config (``storage_options:``, :func:`configure`) and from each file system's standard
environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``, ...; s3fs and
botocore read them). Options and credentials are never logged, never written to a report or
to provenance: URLs are shown without user info and query strings (:func:`display`).

Transient storage errors (throttling, 5xx answers, dropped connections) are retried with
exponential backoff and jitter, a bounded number of times (:func:`retrying`, on top of what
s3fs and botocore already retry); :data:`STATS` counts retries and bytes fetched for tiles.

Writing: object stores have no atomic rename, so an output is built completely in a local
staging folder and then uploaded with :func:`upload_tree`, which writes the completion marker
(the mask's ``zarr.json``) as the very last object; :func:`slidemask.writers.zarr.is_complete`
and a batch's resume trust only that marker.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

__all__ = [
    "STATS",
    "SecretURL",
    "URLPath",
    "configure",
    "display",
    "filesystem",
    "fingerprint",
    "is_url",
    "redact",
    "retrying",
    "storage_options",
    "upload_tree",
    "url_of",
]

log = logging.getLogger("slidemask.storage")

T = TypeVar("T")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

STATS: dict[str, int] = {"retries": 0, "range_requests": 0, "bytes_fetched": 0}
"""Per-process counters: retried storage calls, tile range requests and their bytes."""
_STATS_LOCK = threading.Lock()

RETRY_ATTEMPTS = 6
"""Tries of one storage call before its error is raised (the first one included)."""
RETRY_BASE_SECONDS = 0.1
"""Longest wait before the first retry of a storage call, doubled for each further one (see
:func:`retrying`)."""
RETRY_MAX_SECONDS = 5.0

_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {}


def is_url(value: object) -> bool:
    """Whether ``value`` is a URL with a scheme (``s3://b/k``), not a local path.

    ``file://`` URLs count too (:func:`local_path` turns them into paths).

    Examples
    --------
    >>> is_url("s3://bucket/a.svs"), is_url("/data/a.svs"), is_url(Path("a.svs"))
    (True, False, False)
    """
    if isinstance(value, URLPath):
        return True
    return isinstance(value, str) and _SCHEME.match(value) is not None


def local_path(value: str) -> str | None:
    """The local path of a ``file://`` URL, else None."""
    if value.startswith("file://"):
        return value[len("file://"):] or "/"
    return None


def protocol(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else "file"


class SecretURL(str):
    """A URL with credentials in it (``user:password@``, a presigned query string) that shows
    itself without them.

    The string's value is the whole URL, so whatever opens it (fsspec, tifffile, string
    operations) gets the credentials; ``str()``, ``repr()``, f-strings, ``str.format`` and
    ``%`` formatting (log lines, error messages) give :func:`display` of it. Serialising the
    value itself (``json.dumps``) would write the credentials: record ``str(url)``.

    Examples
    --------
    >>> url = SecretURL("https://host/a.svs?X-Amz-Signature=abc")
    >>> str(url), f"slide {url}", "slide %s" % url, url.endswith("abc")
    ('https://host/a.svs', 'slide https://host/a.svs', 'slide https://host/a.svs', True)
    """

    __slots__ = ()

    def __str__(self) -> str:
        return display(str.__str__(self))

    def __repr__(self) -> str:
        return repr(str(self))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretURL, (str.__str__(self),))


def _plain(text: str) -> str:
    """The characters of a string, as a plain :class:`str` (a :class:`SecretURL` included)."""
    return str.__str__(text)


class URLPath(PurePosixPath):
    """A URL with the path operations of :class:`pathlib.PurePosixPath`.

    ``.name``, ``.parent``, ``/`` and ``.suffix`` work as for paths and ``str()`` gives the URL
    back (``s3://bucket/key``). Nothing here touches storage: use :func:`filesystem`.

    Credentials stay out of it: a URL with ``user:password@`` or a query string (a presigned
    URL's signature) is a path of its :func:`display` form, so ``str()``, ``os.fspath()``,
    its name and whatever records it never hold them; :attr:`url` gives the whole URL to
    open (a :class:`SecretURL`), and pickling keeps it.

    Examples
    --------
    >>> out = URLPath("s3://bucket/masks") / "a.zarr"
    >>> str(out), out.name, str(out.parent)
    ('s3://bucket/masks/a.zarr', 'a.zarr', 's3://bucket/masks')
    >>> signed = URLPath("https://host/b/a.svs?X-Amz-Signature=abc")
    >>> str(signed), signed.name, signed.url.endswith("abc")
    ('https://host/b/a.svs', 'a.svs', True)
    """

    _secret: str | None = None  # the whole URL, when it differs from what is shown

    if sys.version_info >= (3, 12):

        def __init__(self, *args: Any) -> None:
            super().__init__(*_shown_segments(args))
            self._secret = _secret_of(args)

    else:

        def __new__(cls, *args: Any) -> URLPath:
            self = super().__new__(cls, *_shown_segments(args))
            self._secret = _secret_of(args)
            return self

    @property
    def url(self) -> str:
        """The URL to open: with its credentials (a :class:`SecretURL`) when it has any."""
        return SecretURL(self._secret) if self._secret is not None else str(self)

    def __str__(self) -> str:
        text = super().__str__()
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*):/(?!/)", r"\1://", text, count=1)

    def __repr__(self) -> str:
        return f"URLPath({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (URLPath, (self._secret if self._secret is not None else str(self),))

    def as_posix(self) -> str:
        return str(self)

    def __fspath__(self) -> str:
        return str(self)


def _shown_segments(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(display(_plain(a)) if isinstance(a, str) else a for a in args)


def _secret_of(args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and isinstance(args[0], str):
        whole = _plain(args[0])
        if display(whole) != whole:
            return whole
    return None


def url_of(value: str | os.PathLike[str]) -> str:
    """What opens a slide or output: a :class:`URLPath`'s :attr:`~URLPath.url` (credentials
    kept), anything else as :func:`os.fspath` gives it."""
    if isinstance(value, URLPath):
        return value.url
    return os.fspath(value)


_URL_IN_TEXT = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s'\"<>]*@)?"
    r"(?P<rest>[^\s?#'\"<>]*)(?P<query>[?#][^\s'\"<>)\]]*)?"
)


def redact(text: str) -> str:
    """``text`` with every URL in it shown as :func:`display` shows it (no user info, no
    query string): for error messages and log lines that quote a library's exception.

    Examples
    --------
    >>> redact("403 for url='https://host/a.svs?X-Amz-Signature=abc' (s3://u:p@b/k)")
    "403 for url='https://host/a.svs' (s3://b/k)"
    """
    return _URL_IN_TEXT.sub(lambda m: m["scheme"] + m["rest"], _plain(text))


def location(value: str | os.PathLike[str]) -> Path | URLPath:
    """A URL as :class:`URLPath`, a ``file://`` URL or a path as an absolute :class:`Path`."""
    if isinstance(value, URLPath):
        return value
    text = os.fspath(value)
    if is_url(text):
        local = local_path(text)
        if local is None:
            return URLPath(text.rstrip("/") if text.count("/") > 3 else text)
        text = local
    return Path(os.path.abspath(os.path.expanduser(text)))


def display(url: str | os.PathLike[str]) -> str:
    """A URL as it may be shown: without ``user:password@`` and without a query string (a
    presigned URL's signature is a credential).

    Examples
    --------
    >>> display("https://user:secret@host/a.svs?X-Amz-Signature=abc")
    'https://host/a.svs'
    """
    text = os.fspath(url)
    if not is_url(text):
        return text
    text = re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@", r"\1", text)
    return text.split("?", 1)[0].split("#", 1)[0]


class RedactURLs(logging.Filter):
    """Log filter: a record's message and traceback with every URL shown without credentials
    (:func:`redact`), whatever the handler. Installed on the ``slidemask`` loggers that name
    slides (the package's own, ``slidemask.batch`` and ``slidemask.storage``) when this module
    is imported, which any run that opens a URL does first."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            shown = redact(message)
            if shown != message:
                record.msg, record.args = shown, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if "://" in text:
                record.exc_text = redact(text)
        return True


_NAMING_LOGGERS = ("slidemask", "slidemask.batch", "slidemask.storage")


def _redact_logs() -> None:
    for name in _NAMING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactURLs) for f in logger.filters):
            logger.addFilter(RedactURLs())


def configure(options: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Set this process's default options per protocol (``{"s3": {"endpoint_url": ...}}``).

    Called with the config's ``storage_options`` before a run; options given to a call win.
    """
    _DEFAULT_OPTIONS.clear()
    for key, value in (options or {}).items():
        _DEFAULT_OPTIONS[str(key)] = dict(value)


def storage_options(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options for ``url``'s protocol: the configured defaults, updated by ``options``."""
    merged = dict(_DEFAULT_OPTIONS.get(protocol(url), {}))
    merged.update(options or {})
    return merged


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec file system, path inside it)`` for ``url``; instances are cached by fsspec."""
    import fsspec.core

    # a plain string: libraries that copy a str subclass with str() (yarl does) would get
    # a SecretURL's shown form, without the credentials that open it
    fs, path = fsspec.core.url_to_fs(_plain(url), **storage_options(url, options))
    return fs, path


def _transient(exc: BaseException) -> bool:
    """Whether a storage error is worth retrying (throttling, 5xx, network), not a missing
    object, a refused permission or a bad request."""
    if isinstance(
        exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    ):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    text = str(exc)
    if any(word in text for word in ("SlowDown", "Throttl", "RequestTimeout", "InternalError",
                                     "ServiceUnavailable", "503", "500", "502", "504",
                                     "Connection", "reset", "timed out")):
        return True
    return name in {
        "ClientOSError", "ServerDisconnectedError", "ClientPayloadError", "ServerTimeoutError",
        "IncompleteRead", "ReadTimeoutError", "EndpointConnectionError",
        "ConnectionClosedError", "ResponseStreamingError", "FSTimeoutError",
    } or (isinstance(exc, OSError) and exc.errno is None)


def retrying(
    call: Callable[[], T],
    what: str,
    *,
    attempts: int | None = None,
    transient: Callable[[BaseException], bool] = _transient,
    base_seconds: float = RETRY_BASE_SECONDS,
) -> T:
    """``call()``, retried on transient errors with exponential backoff and full jitter.

    Parameters
    ----------
    call
        An idempotent storage operation.
    what
        What it does, for the log (no credentials: use :func:`display` for URLs).
    attempts
        Tries in all (default :data:`RETRY_ATTEMPTS`).
    transient
        Which errors are retried; others are raised at once.
    base_seconds
        Longest wait before the first retry (default :data:`RETRY_BASE_SECONDS`); it doubles
        for each further one, up to :data:`RETRY_MAX_SECONDS`, and each wait is that times a
        random factor between 0.5 and 1.

    Returns
    -------
    object
        What ``call`` returned.

    Raises
    ------
    Exception
        The last error once the tries are used up, or the first non-transient one.
    """
    tries = RETRY_ATTEMPTS if attempts is None else attempts
    for attempt in range(1, tries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt >= tries or not transient(exc):
                raise
            delay = min(RETRY_MAX_SECONDS, base_seconds * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
            with _STATS_LOCK:
                STATS["retries"] += 1
            log.info("%s: %s, retrying in %.2f s (try %d of %d)",
                     what, type(exc).__name__, delay, attempt + 1, tries)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _count(requests: int, nbytes: int) -> None:
    with _STATS_LOCK:
        STATS["range_requests"] += requests
        STATS["bytes_fetched"] += nbytes


def fingerprint(url: str, options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """``(size, version)`` of a stored object: its size and a number from its ETag or
    modification time, so that a changed object is noticed.

    Raises
    ------
    FileNotFoundError
        No such object.
    """
    fs, path = filesystem(url, options)
    info = retrying(lambda: fs.info(path), f"stat {display(url)}")
    if info.get("type") == "directory":
        raise IsADirectoryError(f"{display(url)} is a folder")
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    version = int.from_bytes(str(tag).encode()[-8:].rjust(8, b"\0"), "big") if tag else 0
    return int(info.get("size") or 0), version


_BLOCKS: OrderedDict[tuple[int, int], bytes] = OrderedDict()
"""Blocks of stored objects read lately, ``(reader number, block index) -> bytes``, least
recently used first (see :class:`RangeReader`)."""
_PENDING: dict[tuple[int, int], threading.Event] = {}
_BLOCKS_LOCK = threading.Lock()
_CACHED = [0]  # bytes in _BLOCKS


def _cache_block(key: tuple[int, int], data: bytes, budget: int) -> None:
    """Keep a block, dropping the least recently used beyond ``budget`` bytes (lock held)."""
    old = _BLOCKS.pop(key, None)
    _CACHED[0] += len(data) - (len(old) if old is not None else 0)
    _BLOCKS[key] = data
    while _CACHED[0] > budget and _BLOCKS:
        _, dropped = _BLOCKS.popitem(last=False)
        _CACHED[0] -= len(dropped)


def _after_fork() -> None:
    """A forked child starts with fresh locks and no reads in flight (their threads are not
    in the child)."""
    global _BLOCKS_LOCK, _STATS_LOCK
    _BLOCKS_LOCK = threading.Lock()
    _STATS_LOCK = threading.Lock()
    _PENDING.clear()


os.register_at_fork(after_in_child=_after_fork)


class RangeReader:
    """Byte ranges of one stored object, fetched with retries; picklable (holds the URL and
    options, opens the file system per process).

    :meth:`prefetch` fetches many ranges at once (adjacent ones merged, requests concurrent
    where the file system supports it) and keeps them for this thread's following
    :meth:`pread` calls, so a chunk's tiles cost a few requests, not one each.

    Reads of one region on its own fetch exactly its bytes. Once reads cluster (a range
    within ``block`` bytes of one fetched lately, as when a pass over a level reads chunk
    after chunk, in whatever order the scheduler picks), whole aligned blocks of
    ``block`` bytes are fetched instead and kept in a cache of :attr:`CACHE_BYTES`
    (one per process, shared by its threads and readers; least recently used blocks go
    first): the neighbouring chunks' tiles, which lie in the same rows of tiles and so in the
    same blocks, then cost no request. A block another thread is fetching is waited for, not
    fetched twice. Each reader has its own blocks: a slide rewritten under the same URL is
    opened with a new reader (:func:`slidemask.io.open_slide` checks the object's size and
    version), never served the old bytes.

    Measured on a 20000² JPEG slide (76 MiB) from a local S3 server, a threshold pass over
    level 0 (100 chunks of 2048², 400 rows of tiles): 400 requests exact, about 30 with
    2 MiB blocks, for 55 MiB fetched instead of 54 (each request costs the client and the
    server about as much time as a few megabytes of data).

    Parameters
    ----------
    url
        The stored object.
    options
        Storage options for its file system (:func:`storage_options`).
    block
        Bytes per block once reads cluster (default :attr:`BLOCK`). 0: never fetch blocks,
        every read fetches exactly its own bytes. The bytes read are the same either way;
        only the number and size of the requests change.
    """

    MERGE_GAP = 8192  # ranges closer than this are fetched as one
    BLOCK = 2 * 2**20
    CACHE_BYTES = 64 * 2**20
    _RECENT = 64  # fetched extents remembered to notice clustered reads
    _numbers = itertools.count()

    def __init__(
        self, url: str, options: Mapping[str, Any] | None = None, *, block: int = BLOCK
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.block = int(block)
        self._local = threading.local()
        self._number = next(RangeReader._numbers)  # this reader's blocks in the cache
        self._recent: deque[tuple[int, int]] = deque(maxlen=self._RECENT)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RangeReader, (self.url, self.options), {"block": self.block})

    def _fs(self) -> tuple[Any, str]:
        return filesystem(self.url, self.options)

    @staticmethod
    def _merge(ranges: Iterable[tuple[int, int]], gap: int) -> list[list[int]]:
        """``[start, end]`` extents covering sorted ``(offset, count)`` ranges, those closer
        than ``gap`` bytes merged."""
        merged: list[list[int]] = []
        for offset, count in ranges:
            if merged and offset <= merged[-1][1] + gap:
                merged[-1][1] = max(merged[-1][1], offset + count)
            else:
                merged.append([offset, offset + count])
        return merged

    def _clustered(self, extents: list[list[int]]) -> bool:
        """Whether any extent lies within a block of one fetched lately (lock held); never
        with ``block=0``."""
        return self.block > 0 and any(
            start - self.block <= end and begin <= stop + self.block
            for begin, end in extents for start, stop in self._recent
        )

    def _fetch(self, extents: list[list[int]]) -> list[bytes]:
        """The bytes of each ``[start, end]`` extent, requested concurrently (an extent that
        runs past the object's end comes back shorter)."""
        fs, path = self._fs()
        starts = [e[0] for e in extents]
        ends = [e[1] for e in extents]

        def fetch() -> list[bytes]:
            if len(extents) == 1:
                return [fs.cat_file(path, start=starts[0], end=ends[0])]
            out = fs.cat_ranges([path] * len(extents), starts, ends, on_error="return")
            for item in out:
                if isinstance(item, BaseException):
                    raise item
            return list(out)

        datas = retrying(fetch, f"read {len(extents)} range(s) of {display(self.url)}")
        _count(len(extents), sum(len(d) for d in datas))
        return [bytes(d) for d in datas]

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Fetch ``(offset, count)`` ranges for this thread's next :meth:`pread` calls."""
        wanted = sorted({(int(o), int(c)) for o, c in ranges if c > 0})
        extents = self._merge(wanted, self.MERGE_GAP)
        with _BLOCKS_LOCK:
            blocked = self._clustered(extents)
            self._recent.extend((e[0], e[1]) for e in extents)
        blobs = self._from_blocks(wanted) if blocked else None
        if blobs is None:
            blobs = {}
            if extents:
                for (start, end), data in zip(extents, self._fetch(extents), strict=True):
                    if len(data) != end - start:
                        raise OSError(f"short read ({len(data)} of {end - start} bytes)")
                    for offset, count in wanted:
                        if start <= offset and offset + count <= end:
                            blobs[(offset, count)] = data[offset - start : offset - start + count]
        self._local.blobs = blobs

    def _from_blocks(self, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes] | None:
        """``wanted`` cut from cached blocks, fetching the missing ones; None when a block
        was dropped from the cache before it could be used (then the caller fetches)."""
        size, me = self.block, self._number
        need = sorted({b for o, c in wanted for b in range(o // size, (o + c - 1) // size + 1)})
        with _BLOCKS_LOCK:
            waits = {_PENDING[me, b] for b in need if (me, b) in _PENDING}
            mine = [b for b in need if (me, b) not in _BLOCKS and (me, b) not in _PENDING]
            event = threading.Event()
            for b in mine:
                _PENDING[me, b] = event
        got = self._load(mine, event) if mine else {}
        for other in waits:
            other.wait()
        with _BLOCKS_LOCK:
            for b in need:
                cached = got.get(b, _BLOCKS.get((me, b)))
                if cached is None:
                    return None
                got[b] = cached
                if (me, b) in _BLOCKS:
                    _BLOCKS.move_to_end((me, b))
        blobs: dict[tuple[int, int], bytes] = {}
        for offset, count in wanted:
            first, last = offset // size, (offset + count - 1) // size
            data = b"".join(got[b] for b in range(first, last + 1))
            piece = data[offset - first * size : offset - first * size + count]
            if len(piece) != count:
                raise OSError(f"short read ({len(piece)} of {count} bytes)")
            blobs[(offset, count)] = piece
        return blobs

    def _load(self, blocks: list[int], event: threading.Event) -> dict[int, bytes]:
        """Fetch ``blocks`` (registered as pending under ``event``), cache them, and set
        ``event`` (also when the fetch fails: waiting threads then fetch for themselves)."""
        size, me = self.block, self._number
        got: dict[int, bytes] = {}
        try:
            runs = self._merge(((b * size, size) for b in blocks), 0)
            for (start, end), data in zip(runs, self._fetch(runs), strict=True):
                for b in range(start // size, end // size):
                    got[b] = data[b * size - start : (b + 1) * size - start]
        finally:
            with _BLOCKS_LOCK:
                for b, data in got.items():
                    _cache_block((me, b), data, self.CACHE_BYTES)
                for b in blocks:
                    if _PENDING.get((me, b)) is event:
                        del _PENDING[me, b]
                event.set()
        return got

    def release(self) -> None:
        """Forget this thread's prefetched ranges."""
        self._local.blobs = {}

    def pread(self, count: int, offset: int) -> bytes:
        """``count`` bytes at ``offset``: prefetched, else fetched now."""
        blobs = getattr(self._local, "blobs", None)
        if blobs:
            data = blobs.get((offset, count))
            if data is not None:
                return bytes(data)
        fs, path = self._fs()
        data = retrying(
            lambda: fs.cat_file(path, start=offset, end=offset + count),
            f"read {count} bytes of {display(self.url)}",
        )
        _count(1, len(data))
        return bytes(data)


def open_binary(url: str, options: Mapping[str, Any] | None = None) -> Any:
    """A seekable read-only file object of a stored object, for parsing its structure
    (read in cached 16 KiB blocks: an IFD costs one small request)."""
    fs, path = filesystem(url, options)
    return retrying(
        lambda: fs.open(path, "rb", block_size=2**14, cache_type="blockcache"),
        f"open {display(url)}",
    )


# --- outputs --------------------------------------------------------------------------------


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(retrying(lambda: fs.exists(path), f"look up {display(url)}"))


def read_text(url: str) -> str | None:
    """The text of a stored object, or None when absent."""
    fs, path = filesystem(url)

    def read() -> str | None:
        try:
            return bytes(fs.cat_file(path)).decode("utf-8")
        except FileNotFoundError:
            return None

    return retrying(read, f"read {display(url)}")


def read_many(urls: Sequence[str]) -> dict[str, bytes]:
    """The bytes of stored objects of one file system, read concurrently where it can;
    absent ones left out."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0])
    paths = {filesystem(url)[1]: url for url in urls}
    shown = display(str(urls[0]).rsplit("/", 1)[0])
    got = retrying(lambda: fs.cat(list(paths), on_error="omit"),
                   f"read {len(paths)} object(s) under {shown}")
    if not isinstance(got, dict):  # one path: fsspec gives its bytes
        got = {next(iter(paths)): got}
    return {paths[p]: bytes(data) for p, data in got.items() if p in paths}


def remove_tree(url: str) -> None:
    """Remove a stored object or every object under a prefix (absent is fine)."""
    fs, path = filesystem(url)

    def remove() -> None:
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        fs.invalidate_cache()

    retrying(remove, f"remove {display(url)}")


def list_names(url: str) -> list[str]:
    """Names directly under a prefix (objects and sub-prefixes); empty when absent."""
    fs, path = filesystem(url)

    def names() -> list[str]:
        try:
            fs.invalidate_cache(path)
            entries = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]

    return retrying(names, f"list {display(url)}")


def put_file(local: str | os.PathLike[str], url: str) -> None:
    """Upload one file (retried: a put of the same bytes is idempotent)."""
    if not is_url(url):  # a local destination: copy (fsspec's local put makes no folders)
        import shutil

        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        shutil.copyfile(local, url)
        return
    fs, path = filesystem(url)
    retrying(lambda: fs.put_file(os.fspath(local), path), f"upload {display(url)}")


def upload_tree(
    local: str | os.PathLike[str],
    url: str,
    *,
    last: Sequence[str] = (),
    threads: int = 8,
) -> int:
    """Upload every file under the folder ``local`` to the prefix ``url``, ``last`` at the end.

    Parameters
    ----------
    local
        A local folder (or a single file).
    url
        The destination prefix (or object, for a file).
    last
        Relative paths (``/``-separated) uploaded after all others, in this order: the
        completion marker goes here, so it is the last object written.
    threads
        Concurrent uploads of the other files.

    Returns
    -------
    int
        Files uploaded.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = Path(local)
    if root.is_file():
        put_file(root, url)
        return 1
    files = sorted(p for p in root.rglob("*") if p.is_file())
    rel = {p: p.relative_to(root).as_posix() for p in files}
    late = [p for name in last for p in files if rel[p] == name]
    early = [p for p in files if p not in late]
    base = url.rstrip("/")
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for future in [pool.submit(put_file, p, f"{base}/{rel[p]}") for p in early]:
            future.result()
    for p in late:
        put_file(p, f"{base}/{rel[p]}")
    return len(files)


def list_files(url: str, *, recursive: bool) -> list[str]:
    """URLs of the objects directly under a prefix (or below it, with ``recursive``)."""
    fs, path = filesystem(url)
    proto = protocol(url)

    def listing() -> list[str]:
        fs.invalidate_cache(path)
        if recursive:
            found = fs.find(path)
        else:
            found = [e["name"] for e in fs.ls(path, detail=True) if e.get("type") == "file"]
        return sorted(str(f) for f in found)

    names = retrying(listing, f"list {display(url)}")
    return [n if is_url(n) else f"{proto}://{n.lstrip('/')}" for n in names]


def glob_urls(pattern: str) -> list[str]:
    fs, path = filesystem(pattern)
    proto = protocol(pattern)
    names = retrying(lambda: fs.glob(path), f"glob {display(pattern)}")
    return sorted(n if is_url(n) else f"{proto}://{str(n).lstrip('/')}" for n in names)


def is_dir(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(retrying(lambda: fs.isdir(path), f"look up {display(url)}"))


_redact_logs()
