"""Slides and outputs on object storage: a local S3 server (moto) on 127.0.0.1, behind a small
proxy that counts the bytes it serves and fails a share of requests on demand."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slidemask import open_slide, read_mask
from slidemask.batch import run_batch
from slidemask.config import Config
from slidemask.inputs import expand_locations
from slidemask.io.synthetic import write_synthetic_slide
from slidemask.storage import STATS, RangeReader, display, retrying
from slidemask.writers.zarr import is_complete, stored_config_hash

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

SECRET = "s3cr3t-never-written-anywhere"
BUCKET = "slides"


class _Proxy:
    """Forwards HTTP to the S3 server; counts response bytes; ``fail_every`` N answers every
    Nth request with 503 SlowDown instead (a throttling server)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.fail_every = 0
        self.requests = 0
        self.faults = 0
        self.bytes_served = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests += 1
                    fail = proxy.fail_every and proxy.requests % proxy.fail_every == 0
                    if fail:
                        proxy.faults += 1
                if fail:
                    data = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                            b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(*proxy.target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                self.send_response(response.status)
                length_header = response.getheader("Content-Length")
                for key, value in response.getheaders():
                    if key.lower() not in {"connection", "transfer-encoding", "content-length",
                                           "server", "date"}:
                        self.send_header(key, value)
                head = self.command == "HEAD" and length_header is not None
                self.send_header("Content-Length", length_header if head else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                    with proxy.lock:
                        proxy.bytes_served += len(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests = self.faults = self.bytes_served = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def s3() -> Iterator[_Proxy]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    proxy = _Proxy(server.get_host_and_port())
    saved = {k: os.environ.get(k) for k in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=SECRET,
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=proxy.url)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    try:
        yield proxy
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proxy.close()
        server.stop()


@contextlib.contextmanager
def _slidemask_log() -> Iterator[list[str]]:
    """The ``slidemask`` loggers' lines (tracebacks included) while the block runs, at DEBUG,
    whatever an earlier test (the command line) set on the package logger."""
    lines: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    package = logging.getLogger("slidemask")
    handler, level = Lines(logging.DEBUG), package.level
    package.addHandler(handler)
    package.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def _fs() -> Any:
    import s3fs

    return s3fs.S3FileSystem()


@pytest.fixture(scope="module")
def local_slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("slides")
    return [write_synthetic_slide(folder / f"s{i}.ome.tif", 1536, tile=128, levels=2, seed=i)
            for i in range(3)]


CONFIG: dict[str, Any] = {
    "resolution": {"level": 0},
    "masks": {"tissue": [{"gray": {}}, {"threshold": {"below": 200}}]},
    "chunk_size": 512,
    "outputs": {"preview": True, "summary": True},
}


def _config(**extra: Any) -> Config:
    return Config.model_validate({**CONFIG, **extra})


def _upload(slides: list[Path], prefix: str) -> None:
    fs = _fs()
    for path in slides:
        fs.put_file(str(path), f"{BUCKET}/{prefix}/{path.name}")


def test_lazy_region_read_fetches_a_few_percent(s3: _Proxy, tmp_path: Path) -> None:
    path = write_synthetic_slide(tmp_path / "big.ome.tif", 4096, tile=256, levels=3)
    _fs().put_file(str(path), f"{BUCKET}/lazy/big.ome.tif")
    s3.reset()
    slide = open_slide(f"s3://{BUCKET}/lazy/big.ome.tif", chunk_size=512)
    assert slide.levels[2].shape == (1024, 1024, 3)
    region = slide.levels[2][0:512, 512:1024].compute(scheduler="threads")  # one chunk
    fetched, size = s3.bytes_served, path.stat().st_size
    assert fetched < 0.05 * size, (fetched, size)
    local = open_slide(path)
    np.testing.assert_array_equal(region, local.levels[2][0:512, 512:1024].compute())
    assert str(slide.path) == f"s3://{BUCKET}/lazy/big.ome.tif"
    print(f"level-2 region: {fetched} of {size} bytes ({100 * fetched / size:.2f} %)")


def test_a_pass_over_a_level_fetches_whole_blocks(s3: _Proxy, tmp_path: Path) -> None:
    """Chunk after chunk (the scheduler's order), the tiles come in a few large requests, not
    one per chunk and row of tiles; the pixels are the local file's."""
    path = write_synthetic_slide(tmp_path / "pass.ome.tif", 3072, tile=128, levels=1)
    _fs().put_file(str(path), f"{BUCKET}/pass/pass.ome.tif")
    slide = open_slide(f"s3://{BUCKET}/pass/pass.ome.tif", chunk_size=256)
    before = dict(STATS)
    pixels = slide.levels[0].compute(scheduler="threads", num_workers=2)
    requests = STATS["range_requests"] - before["range_requests"]
    fetched = STATS["bytes_fetched"] - before["bytes_fetched"]
    size = path.stat().st_size
    chunks, tile_rows = 12 * 12, 12 * 24  # 2 rows of tiles in each chunk
    assert requests < chunks / 4, (requests, chunks, tile_rows)
    assert fetched < 1.5 * size, (fetched, size)
    np.testing.assert_array_equal(pixels, open_slide(path).levels[0].compute())
    print(f"level 0 in {requests} requests ({chunks} chunks), {fetched} of {size} bytes")


def test_listing_a_prefix_like_a_folder(s3: _Proxy, local_slides: list[Path]) -> None:
    _upload(local_slides, "listed")
    _fs().pipe(f"{BUCKET}/listed/notes.txt", b"not a slide")
    found = [str(p) for p in expand_locations([f"s3://{BUCKET}/listed/"])]
    assert found == [f"s3://{BUCKET}/listed/{p.name}" for p in local_slides]
    globbed = expand_locations([f"s3://{BUCKET}/listed/s1*"])
    assert [str(p) for p in globbed] == [f"s3://{BUCKET}/listed/s1.ome.tif"]


def _masks(prefix: str, names: list[str]) -> dict[str, np.ndarray]:
    return {n: read_mask(f"{prefix}/{n}.zarr").compute() for n in names}


def test_batch_from_bucket_to_bucket_and_resume(
    s3: _Proxy, local_slides: list[Path], tmp_path: Path
) -> None:
    _upload(local_slides, "in")
    config = _config(storage_options={"s3": {"secret": SECRET, "key": "testing"}})
    clean = run_batch([str(p) for p in local_slides], _config(), tmp_path / "clean")
    assert [r.status for r in clean] == ["done"] * 3
    with _slidemask_log() as lines:
        results = run_batch([f"s3://{BUCKET}/in/"], config, f"s3://{BUCKET}/out/")
    assert [r.status for r in results] == ["done"] * 3, [r.error for r in results]
    assert str(results[0].output) == f"s3://{BUCKET}/out/s0.zarr"
    names = ["s0", "s1", "s2"]
    remote = _masks(f"s3://{BUCKET}/out", names)
    for name in names:
        np.testing.assert_array_equal(remote[name], read_mask(tmp_path / "clean" / f"{name}.zarr"))
        assert is_complete(f"s3://{BUCKET}/out/{name}.zarr")
    fs = _fs()
    listing = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/out", refresh=True))
    assert listing == sorted(["report.csv", "report.html", "report.json",
                              *[f"{n}{e}" for n in names for e in (".zarr", ".png", ".json")]])
    report = fs.cat_file(f"{BUCKET}/out/report.json").decode()
    assert json.loads(report)["counts"]["done"] == 3
    # the page links into the prefix it sits in: previews and summaries found there
    page = fs.cat_file(f"{BUCKET}/out/report.html").decode()
    rows = _page_slides(page)
    assert [r["path"] for r in rows] == [f"s3://{BUCKET}/in/{n}.ome.tif" for n in names]
    assert [r["thumb"] for r in rows] == [f"{n}.png" for n in names]
    assert [r["links"] for r in rows] == [{"zarr": f"{n}.zarr", "preview": f"{n}.png",
                                           "summary": f"{n}.json"} for n in names]
    assert all(r["area_mm2"] is not None for r in rows)  # read from each summary
    texts = [report, page, fs.cat_file(f"{BUCKET}/out/s0.zarr/zarr.json").decode(),
             fs.cat_file(f"{BUCKET}/out/s0.json").decode(), "\n".join(lines)]
    assert len(lines) > 3
    assert not any(SECRET in text for text in texts)  # credentials nowhere
    again = run_batch([f"s3://{BUCKET}/in/"], config, f"s3://{BUCKET}/out/")
    assert [r.status for r in again] == ["skipped"] * 3
    assert again[0].stats["foreground_pixels"] == results[0].stats["foreground_pixels"]


def _page_slides(page: str) -> list[dict[str, Any]]:
    """The slides' rows in a ``report.html`` page's data."""
    found = re.search(r'<script type="application/json" id="slidemask-data">(.*?)</script>',
                      page, re.S)
    assert found is not None
    slides: list[dict[str, Any]] = json.loads(found.group(1))["slides"]
    return slides


def test_cli_run_from_bucket_to_bucket(
    s3: _Proxy, local_slides: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``slidemask run`` with a URL as --output: outputs, reports and the printed report path
    under the prefix, not a mangled local path."""
    import yaml

    from slidemask.cli import main

    _upload(local_slides[:2], "cli-in")
    config = tmp_path / "mask.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = f"s3://{BUCKET}/cli-out"
    argv = ["run", str(config), "-i", f"s3://{BUCKET}/cli-in/", "-o", out]
    package = logging.getLogger("slidemask")
    saved = package.handlers[:], package.propagate, package.level
    try:
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert main([*argv, "-q"]) == 0  # resumed: everything skipped
        again = capsys.readouterr()
    finally:  # main() sets the package logger up for a terminal
        package.handlers[:], package.propagate = saved[0], saved[1]
        package.setLevel(saved[2])
    assert again.out.startswith("0 done, 2 skipped, 0 failed")
    assert captured.out.rstrip().endswith(f"report: {out}/report.json"), captured.out
    assert f"QC report: {out}/report.html" in captured.err
    assert not Path("s3:").exists()  # nothing written to a local folder named like the URL
    listing = {p.rsplit("/", 1)[-1] for p in _fs().ls(f"{BUCKET}/cli-out", refresh=True)}
    assert {"report.json", "report.csv", "report.html", "s0.zarr", "s1.zarr"} <= listing
    report = json.loads(_fs().cat_file(f"{BUCKET}/cli-out/report.json"))
    assert report["counts"]["skipped"] == 2 and report["output_dir"] == out  # the rerun's
    # a preview of a mask on the bucket, and a slide run straight from its URL
    png = tmp_path / "s0.png"
    assert main(["preview", f"s3://{BUCKET}/cli-in/s0.ome.tif", f"{out}/s0.zarr",
                 "-o", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    from slidemask.config import config_from_yaml
    from slidemask.pipeline import run_slide

    result = run_slide(f"s3://{BUCKET}/cli-in/s1.ome.tif", config_from_yaml(config.read_text()),
                       tmp_path / "one")
    assert result.status == "done", result.error
    assert str(result.path) == f"s3://{BUCKET}/cli-in/s1.ome.tif"
    assert result.output == tmp_path / "one" / "s1.zarr"


def test_kill_9_then_rerun_on_the_bucket(
    s3: _Proxy, local_slides: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    more = [write_synthetic_slide(tmp_path / f"k{i}.ome.tif", 2048, tile=256, levels=1, seed=i)
            for i in range(4)]
    _upload(more, "kill")
    clean = run_batch([str(p) for p in more], _config(), tmp_path / "clean")
    assert {r.status for r in clean} == {"done"}
    out = f"s3://{BUCKET}/killed"
    code = (
        "import sys\n"
        "from slidemask.batch import run_batch\n"
        "from slidemask.config import Config\n"
        f"config = Config.model_validate({CONFIG!r})\n"
        f"run_batch(['s3://{BUCKET}/kill/'], config, {out!r})\n"
    )
    stages = tmp_path / "tmp"  # the killed run's local stage is left here
    stages.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(stages)})
    fs = _fs()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if any(is_complete(f"{out}/k{i}.zarr") for i in range(4)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    complete = [i for i in range(4) if is_complete(f"{out}/k{i}.zarr")]
    assert 1 <= len(complete) < 4
    # an upload killed before its marker: objects without zarr.json are not complete
    missing = next(i for i in range(4) if i not in complete)
    fs.pipe(f"{BUCKET}/killed/k{missing}.zarr/c/0/0", b"half an upload")
    assert not is_complete(f"{out}/k{missing}.zarr")
    assert stored_config_hash(f"{out}/k{missing}.zarr") is None

    # what a process killed mid-slide leaves (the one above may have been killed between two)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (stages / f"slidemask-stage-{dead}-x1y2" / ".k0.zarr.partial-1").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(stages))
    results = run_batch([f"s3://{BUCKET}/kill/"], _config(), out)
    assert list(stages.iterdir()) == []  # the dead process's stage is removed by the next run
    statuses = [r.status for r in results]
    assert statuses.count("skipped") == len(complete), statuses
    assert statuses.count("done") == 4 - len(complete)
    for i in range(4):
        np.testing.assert_array_equal(read_mask(f"{out}/k{i}.zarr").compute(),
                                      read_mask(tmp_path / "clean" / f"k{i}.zarr").compute())


def test_throttled_server_gives_the_clean_output(
    s3: _Proxy, local_slides: list[Path], tmp_path: Path
) -> None:
    _upload(local_slides[:2], "flaky")
    clean = run_batch([str(p) for p in local_slides[:2]], _config(), tmp_path / "clean")
    assert {r.status for r in clean} == {"done"}
    s3.reset()
    s3.fail_every = 7  # one request in seven answered 503 SlowDown
    try:
        results = run_batch([f"s3://{BUCKET}/flaky/"], _config(), f"s3://{BUCKET}/flaky-out")
    finally:
        s3.fail_every = 0
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    assert s3.faults >= 5
    for name in ("s0", "s1"):
        np.testing.assert_array_equal(
            read_mask(f"s3://{BUCKET}/flaky-out/{name}.zarr").compute(),
            read_mask(tmp_path / "clean" / f"{name}.zarr").compute(),
        )
    print(f"{s3.faults} of {s3.requests} requests failed; output identical")


class _Flaky:
    """A file system whose range reads fail with a connection error every ``every`` calls."""

    def __init__(self, fs: Any, every: int) -> None:
        self.fs, self.every, self.calls = fs, every, 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls % self.every == 0:
            raise ConnectionResetError("connection reset by peer (injected)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)

    def cat_file(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return self.fs.cat_file(*args, **kwargs)

    def cat_ranges(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return self.fs.cat_ranges(*args, **kwargs)


@pytest.mark.parametrize("block", [0, 4096])
def test_range_reads_are_retried_with_backoff(
    s3: _Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """A slide's tiles read chunk by chunk (2 x 2 tiles, as ``open_slide(chunk_size=256)``
    reads them) through a connection that drops every third request: each range as it is
    (``block=0``) or, once the reads cluster, in small blocks (many requests); the bytes are
    the file's."""
    import tifffile

    from slidemask import storage

    path = write_synthetic_slide(tmp_path / "r.ome.tif", 1024, tile=128, levels=1)
    _fs().put_file(str(path), f"{BUCKET}/retry/r.ome.tif")
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        tiles = np.array([page.dataoffsets, page.databytecounts]).T.reshape(8, 8, 2)
    real = storage.filesystem
    flaky: dict[str, _Flaky] = {}

    def filesystem(url: str, options: Any = None) -> tuple[Any, str]:
        fs, p = real(url, options)
        return flaky.setdefault("fs", _Flaky(fs, 3)), p

    monkeypatch.setattr(storage, "filesystem", filesystem)
    reader = RangeReader(f"s3://{BUCKET}/retry/r.ome.tif", block=block)
    before = dict(STATS)
    for i, j in np.ndindex(4, 4):
        wanted = [(int(o), int(c)) for o, c in tiles[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                  .reshape(-1, 2)]
        reader.prefetch(wanted)
        for offset, count in wanted:
            assert reader.pread(count, offset) == data[offset : offset + count]
        reader.release()
    assert STATS["retries"] - before["retries"] >= 4
    fetched = STATS["bytes_fetched"] - before["bytes_fetched"]
    exact = int(tiles[..., 1].sum())  # the tiles' own bytes
    assert fetched == exact if block == 0 else fetched > exact  # blocks: whole blocks


def test_retrying_is_bounded_and_skips_permanent_errors() -> None:
    from slidemask import storage

    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        retrying(always, "test", base_seconds=0.001)
    assert len(calls) == storage.RETRY_ATTEMPTS
    calls.clear()

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        retrying(missing, "test", base_seconds=0.001)
    assert len(calls) == 1
    assert display("https://u:p@host/a.svs?X-Amz-Signature=x") == "https://host/a.svs"
    reader = RangeReader("s3://b/k", {"secret": SECRET})
    assert SECRET not in repr(reader)


# --- credentials never recorded ----------------------------------------------------------------


def test_a_presigned_url_is_one_slide_not_a_pattern() -> None:
    """The ``?`` of an https URL starts its query (a presigned URL's signature): the input is
    that one slide, not a glob pattern to list (nothing is fetched)."""
    url = "https://host.example/b/a.svs?X-Amz-Credential=AKIA&X-Amz-Signature=f00d"
    (slide,) = expand_locations([url])
    assert str(slide) == "https://host.example/b/a.svs"


def _signature(url: str) -> str:
    """The credential part of a presigned URL: its query string."""
    return url.split("?", 1)[1]


def test_presigned_url_batch_records_no_signature(
    s3: _Proxy, local_slides: list[Path], tmp_path: Path
) -> None:
    """A presigned https URL reads as one slide; its query string (the signature) is in no
    output, report, log line or result, and neither is it after a failure."""
    _upload(local_slides[:1], "signed")
    fs = _fs()
    url = fs.sign(f"{BUCKET}/signed/s0.ome.tif", expiration=600)
    gone = fs.sign(f"{BUCKET}/signed/missing.ome.tif", expiration=600)
    assert url.startswith("http") and "Signature=" in url
    secrets = [_signature(url), _signature(gone)]
    out = f"s3://{BUCKET}/signed-out"
    config = _config(outputs={"preview": True, "summary": True, "geojson": True,
                              "ome_zarr": True})
    with _slidemask_log() as lines:
        results = run_batch([url, gone], config, out)
    assert [r.status for r in results] == ["done", "failed"], [r.error for r in results]
    assert str(results[0].path) == url.split("?", 1)[0]
    assert str(results[0].output) == f"{out}/s0.zarr"
    assert "file not found" in (results[1].error or "")
    clean = run_batch([str(local_slides[0])], _config(), tmp_path / "clean")[0]
    np.testing.assert_array_equal(read_mask(f"{out}/s0.zarr").compute(),
                                  read_mask(clean.output).compute())
    stored = {p: fs.cat_file(p) for p in fs.find(f"{BUCKET}/signed-out")}
    assert any(p.endswith("report.json") for p in stored)
    log_text = "\n".join(lines)
    assert "missing.ome.tif" in log_text and "Traceback" in log_text
    texts = [*(b.decode("latin-1") for b in stored.values()), log_text,
             repr(results), *(json.dumps(r.to_dict()) for r in results)]
    names = [*stored, "log", "repr", "dict", "dict"]
    for secret in secrets:
        assert not [n for n, text in zip(names, texts, strict=True) if secret in text], secret
    attrs = json.loads(stored[f"{BUCKET}/signed-out/s0.zarr/zarr.json"])["attributes"]
    assert attrs["provenance"]["source"]["path"] == url.split("?", 1)[0]


def test_recorded_strings_hold_no_credentials(tmp_path: Path) -> None:
    from slidemask import storage
    from slidemask.report import SlideResult, write_report

    signed = "https://user:pa55@host.example/b/a.svs?X-Amz-Credential=AKIA&X-Amz-Signature=f00d"
    path = storage.URLPath(signed)
    assert str(path) == os.fspath(path) == "https://host.example/b/a.svs"
    assert path.name == "a.svs" and "f00d" in path.url and "f00d" not in str(path.url)
    assert f"{path.url}" == "https://host.example/b/a.svs"
    assert "slide %s" % (path.url,) == "slide https://host.example/b/a.svs"  # noqa: UP031
    assert storage.location(signed) == path and storage.location(signed).url == signed
    error = f"reading {signed} failed: 403 for url='{signed}'"
    result = SlideResult(path=signed, output="s3://b/out/a.zarr", status="failed", error=error)
    json_path, csv_path = write_report([result], tmp_path, extra={"inputs": [signed]})
    for text in (json_path.read_text(), csv_path.read_text(), repr(result),
                 storage.redact(error)):
        assert "f00d" not in text and "pa55" not in text and "AKIA" not in text, text
    assert "https://host.example/b/a.svs" in json_path.read_text()


def test_overwrite_on_the_bucket_is_never_complete_half_done(
    s3: _Proxy, local_slides: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing a complete output: its marker goes first and comes back last, so an upload
    that fails half way leaves an incomplete output (redone on resume), never one that looks
    complete with old and new objects mixed."""
    from slidemask import storage

    _upload(local_slides[:1], "over")
    source, out = f"s3://{BUCKET}/over/", f"s3://{BUCKET}/over-out"
    mask = f"{out}/s0.zarr"
    assert run_batch([source], _config(), out)[0].status == "done"
    before = read_mask(mask).compute()
    ops: list[tuple[str, str]] = []
    fail_at = [4]  # the 4th upload dies (a mask chunk: the extras go first)
    real_put, real_remove = storage.put_file, storage.remove_tree

    def put_file(local: Any, url: str) -> None:
        ops.append(("put", url.removeprefix(f"{out}/")))
        if sum(op == "put" for op, _ in ops) == fail_at[0]:
            raise ConnectionResetError("connection lost mid-upload (injected)")
        real_put(local, url)

    def remove_tree(url: str) -> None:
        ops.append(("remove", url.removeprefix(f"{out}/")))
        real_remove(url)

    monkeypatch.setattr(storage, "put_file", put_file)
    monkeypatch.setattr(storage, "remove_tree", remove_tree)
    (failed,) = run_batch([source], _config(), out, overwrite=True)
    assert failed.status == "failed" and "upload failed" in (failed.error or ""), failed.error
    assert ops[0] == ("remove", "s0.zarr/zarr.json")  # the old output stops being complete
    assert not is_complete(mask) and stored_config_hash(mask) is None
    assert "zarr.json" not in storage.list_names(mask)

    ops.clear()
    fail_at[0] = 0  # uploads work again; resume redoes the incomplete output
    (again,) = run_batch([source], _config(), out)
    assert again.status == "done"
    uploads = [name for op, name in ops if op == "put" and name.startswith("s0.zarr/")]
    assert uploads[-1] == "s0.zarr/zarr.json" and uploads.count("s0.zarr/zarr.json") == 1
    assert is_complete(mask)
    np.testing.assert_array_equal(read_mask(mask).compute(), before)


def test_a_rerun_of_a_slide_task_after_its_upload_is_done(
    s3: _Proxy, local_slides: list[Path]
) -> None:
    """dask.distributed reruns a task whose worker was lost, also after the task uploaded its
    output (killed before its result came back): the rerun takes the complete output."""
    from slidemask.config import config_hash
    from slidemask.remote import run_remote_slide

    _upload(local_slides[:1], "rerun")
    config = _config()
    slide, output = f"s3://{BUCKET}/rerun/s0.ome.tif", f"s3://{BUCKET}/rerun-out/s0.zarr"
    first = run_remote_slide(slide, config, f"s3://{BUCKET}/rerun-out", False, output)
    assert first.status == "done" and is_complete(output)
    rerun = run_remote_slide(slide, config, f"s3://{BUCKET}/rerun-out", False, output)
    assert rerun.status == "done", rerun.error
    assert rerun.config_hash == config_hash(config) and str(rerun.output) == output
    assert rerun.stats["foreground_pixels"] == first.stats["foreground_pixels"]
