"""``report.html``: the batch as one self-contained page to look at, beside ``report.json``.

The page is one file with its CSS, script and data inline: it needs no network and no server,
so it works from a laptop after copying the output folder and from a bucket. Thumbnails are
the slides' own previews (``<name>.png``, when the config writes them), linked relatively
and lazily loaded; a slide without one shows a placeholder.

What it shows, one row (and one gallery card) per slide: status, tissue fraction and area in
mm², per-class shares when the summaries carry ``classes``, component count, QC warnings,
seconds, the error of a failed slide, links to its outputs, and cohort outliers: slides whose
tissue fraction or class share lies more than :data:`OUTLIER_Z` robust z-scores
(:func:`robust_z`, median and MAD) from the batch's.

Scale: the records are one JSON array in the page; the script builds each row once, sorts by
reordering an array and shows the result in one DOM pass, so 1000 slides load in well under
a second. The URL remembers the view: ``report.html#sort=-fraction&status=failed&q=text
&outliers=1&view=gallery`` (a leading ``-`` sorts descending).

Everything is read from ``report.json`` and the files beside the outputs (each slide's
``<name>.json`` summary when present, for the area, component count, warnings and classes);
nothing is computed from pixels.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from slidemask.inputs import EXTRA_SUFFIXES, extra_paths_for
from slidemask.writers.atomic import atomic_write, jsonable

__all__ = [
    "MIN_COHORT",
    "OUTLIER_Z",
    "REPORT_HTML",
    "render_html_report",
    "robust_z",
    "write_html_report",
]

REPORT_HTML = "report.html"

OUTLIER_Z = 3.5
"""A slide is an outlier when ``|z| >`` this for a metric (Iglewicz and Hoaglin's cut-off for
the modified z-score)."""

MIN_COHORT = 5
"""Fewest slides with a value for which outliers of that metric are flagged."""

_MAD_SCALE = 0.6745  # Phi^-1(3/4): makes the MAD a standard deviation for normal data
_MEAN_AD_SCALE = 0.7979  # sqrt(2/pi), the same for the mean absolute deviation

def robust_z(values: Sequence[float | None]) -> list[float | None]:
    """Modified z-scores ``0.6745 (x - median) / MAD`` (Iglewicz and Hoaglin), None kept.

    Parameters
    ----------
    values
        One number per slide, or None where the slide has none (failed, no such class).

    Returns
    -------
    list of float or None
        The score per value. When more than half the values are equal (MAD 0) the mean
        absolute deviation stands in (scaled by 0.7979, as for normal data); when every value
        is equal, each score is 0.
    """
    present = sorted(v for v in values if v is not None and math.isfinite(v))
    if not present:
        return [None for _ in values]
    median = _median(present)
    deviations = sorted(abs(v - median) for v in present)
    mad = _median(deviations)
    if mad > 0:
        scale = mad / _MAD_SCALE
    else:
        mean_ad = sum(deviations) / len(deviations)
        scale = mean_ad / _MEAN_AD_SCALE
    return [
        None if v is None or not math.isfinite(v)
        else (0.0 if scale == 0 else (v - median) / scale)
        for v in values
    ]


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _class_share(value: Any) -> tuple[float | None, float | None]:
    """``(share of tissue, area_mm2)`` of one entry of a summary's ``classes``
    (:func:`slidemask.writers.summary.class_areas`: ``fraction_of_tissue``; ``fraction`` in
    summaries written by other tools)."""
    if isinstance(value, Mapping):
        share = value.get("fraction_of_tissue", value.get("fraction"))
        return _number(share), _number(value.get("area_mm2"))
    return _number(value), None


def _href(path: Path, base: Path) -> str:
    try:
        relative = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return path.resolve().as_uri()
    return quote(relative.replace(os.sep, "/"))


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _warnings(stats: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    warnings = summary.get("warnings")
    if isinstance(warnings, list):
        return [str(w) for w in warnings]
    pixels, fraction = stats.get("foreground_pixels"), _number(stats.get("fraction"))
    if not isinstance(pixels, int) or fraction is None:
        return []
    # the summary's own rules, for outputs written without a summary
    from slidemask.writers.summary import qc_warnings

    return qc_warnings({"tissue_pixels": pixels, "tissue_fraction": fraction,
                        "level": stats.get("level"), "mpp": _number(stats.get("mpp")),
                        "threshold": None})


class _LocalOutputs:
    """The outputs in a local folder, looked up as files; links relative to the folder."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def extras(self, output: str) -> tuple[Any, dict[str, Any]]:
        """``(mask location, {extra key: location})`` of a record's ``output``."""
        target = Path(output)
        if not target.is_absolute():
            target = self.base / target
        return target, extra_paths_for(target, EXTRA_SUFFIXES)

    def exists(self, location: Any) -> bool:
        return bool(location.exists())

    def href(self, location: Any) -> str:
        return _href(location, self.base)

    def summary(self, location: Any) -> dict[str, Any]:
        return _read_summary(location)


class _StoredOutputs:
    """The outputs under a prefix on object storage (``s3://bucket/out``): the prefix is
    listed once and the summaries present are read together; links are relative to the
    prefix, so the page finds the previews beside it wherever the folder is served or
    copied."""

    def __init__(self, base: str, records: Sequence[Mapping[str, Any]]) -> None:
        from slidemask import storage

        self.base = base.rstrip("/")
        self.names = set(storage.list_names(self.base))
        wanted = []
        for record in records:
            output = record.get("output")
            if output:
                summary = self.extras(str(output))[1]["summary"]
                if self.exists(summary):
                    wanted.append(summary)
        self.summaries = storage.read_many(wanted)

    def extras(self, output: str) -> tuple[Any, dict[str, Any]]:
        target = output.rstrip("/")
        parent, _, name = target.rpartition("/")
        stem = name.removesuffix(".zarr")
        return target, {key: f"{parent}/{stem}{end}" for key, end in EXTRA_SUFFIXES.items()}

    def _name(self, location: str) -> str | None:
        parent, _, name = location.rpartition("/")
        return name if parent == self.base else None

    def exists(self, location: Any) -> bool:
        return self._name(str(location)) in self.names

    def href(self, location: Any) -> str:
        from slidemask.storage import display

        name = self._name(str(location))
        return quote(name) if name is not None else display(str(location))

    def summary(self, location: Any) -> dict[str, Any]:
        try:
            value = json.loads(self.summaries.get(str(location), b"{}"))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def _shown_path(text: str) -> tuple[str, str]:
    """``(path, name)`` of a slide as the page shows it (URLs kept whole)."""
    if "://" in text:
        return text, text.rstrip("/").rsplit("/", 1)[-1]
    path = Path(text)
    return str(path), path.name


def _slide_row(
    record: Mapping[str, Any], outputs: _LocalOutputs | _StoredOutputs
) -> dict[str, Any]:
    """One slide's entry in the page's data, from its report record and its output files."""
    shown, slide_name = _shown_path(str(record.get("path", "")))
    stats = record.get("stats") if isinstance(record.get("stats"), Mapping) else {}
    assert isinstance(stats, Mapping)
    output = record.get("output")
    links: dict[str, str] = {}
    summary: dict[str, Any] = {}
    thumb = None
    if output:
        target, extras = outputs.extras(str(output))
        if outputs.exists(target):
            links["zarr"] = outputs.href(target)
        for key, extra in extras.items():
            if outputs.exists(extra):
                links[key] = outputs.href(extra)
        if "summary" in links:
            summary = outputs.summary(extras["summary"])
        thumb = links.get("preview")
    fraction = _number(stats.get("fraction"))
    if fraction is None:
        fraction = _number(summary.get("tissue_fraction"))
    area = _number(summary.get("tissue_area_mm2"))
    mpp = _number(stats.get("mpp"))
    pixels = stats.get("foreground_pixels")
    if area is None and mpp is not None and isinstance(pixels, int):
        area = pixels * mpp * mpp / 1e6
    components = summary.get("components", stats.get("components"))
    classes_raw = summary.get("classes", stats.get("classes"))
    classes: dict[str, list[float | None]] = {}
    if isinstance(classes_raw, Mapping):
        for name, value in classes_raw.items():
            classes[str(name)] = list(_class_share(value))
    status = str(record.get("status", ""))
    return {
        "name": slide_name,
        "path": shown,
        "status": status,
        "error": record.get("error") if status == "failed" else None,
        "seconds": _number(record.get("seconds")),
        "fraction": fraction,
        "area_mm2": area,
        "components": components if isinstance(components, int) else None,
        "warnings": _warnings(stats, summary) if status != "failed" else [],
        "classes": classes,
        "links": links,
        "thumb": thumb,
    }


def _flag_outliers(rows: list[dict[str, Any]], class_names: list[str]) -> None:
    """Add ``z`` (metric -> score, rounded) and ``outlier`` (metrics beyond the cut-off)."""
    metrics: dict[str, list[float | None]] = {
        "fraction": [r["fraction"] if r["status"] != "failed" else None for r in rows],
    }
    for name in class_names:
        metrics[f"class:{name}"] = [
            (r["classes"].get(name) or [None])[0] if r["status"] != "failed" else None
            for r in rows
        ]
    for row in rows:
        row["z"], row["outlier"] = {}, []
    for metric, values in metrics.items():
        if sum(v is not None for v in values) < MIN_COHORT:
            continue
        for row, z in zip(rows, robust_z(values), strict=True):
            if z is None:
                continue
            row["z"][metric] = round(z, 2)
            if abs(z) > OUTLIER_Z:
                row["outlier"].append(metric)


def _page_data(
    report: Mapping[str, Any], outputs: _LocalOutputs | _StoredOutputs
) -> dict[str, Any]:
    records = [r for r in report.get("slides") or [] if isinstance(r, Mapping)]
    rows = [_slide_row(r, outputs) for r in records]
    class_names: list[str] = list(dict.fromkeys(n for r in rows for n in r["classes"]))
    _flag_outliers(rows, class_names)
    run = {k: v for k, v in report.items() if k != "slides"}
    return {
        "run": run,
        "classes": class_names,
        "slides": rows,
        "previews": any(r["thumb"] for r in rows),
        "outlier_z": OUTLIER_Z,
        "min_cohort": MIN_COHORT,
    }


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` characters at all."""
    text = json.dumps(jsonable(value, "report", default=str), ensure_ascii=False,
                      allow_nan=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html_report(report: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> str:
    """The page for a run report, as text.

    Parameters
    ----------
    report
        The content of ``report.json`` (:func:`slidemask.report.write_report`).
    output_dir
        The folder the page will sit in: links and thumbnails are relative to it, and each
        slide's outputs are looked up there (their existence, and ``<name>.json`` summaries).
        A URL (``s3://bucket/out``) is a prefix on object storage, listed once.

    Returns
    -------
    str
        A complete HTML5 document (UTF-8), with no external resource but the thumbnails.
    """
    from slidemask import storage

    outputs: _LocalOutputs | _StoredOutputs
    if storage.is_url(output_dir) and storage.local_path(os.fspath(output_dir)) is None:
        records = [r for r in report.get("slides") or [] if isinstance(r, Mapping)]
        outputs = _StoredOutputs(os.fspath(output_dir), records)
    else:
        local = storage.local_path(os.fspath(output_dir)) or os.fspath(output_dir)
        outputs = _LocalOutputs(Path(os.path.abspath(local)))
    data = _page_data(report, outputs)
    counts = report.get("counts") if isinstance(report.get("counts"), Mapping) else {}
    assert isinstance(counts, Mapping)
    title = f"slidemask report: {counts.get('total', len(data['slides']))} slides"
    return (
        _PAGE.replace("@TITLE@", html.escape(title))
        .replace("@CSS@", _CSS)
        .replace("@SCRIPT@", _SCRIPT)
        .replace("@DATA@", _script_json(data))
    )


def write_html_report(
    report_json: str | os.PathLike[str],
    html_path: str | os.PathLike[str] | None = None,
    *,
    output_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the page for ``report.json`` beside it (``report.html``), atomically.

    Parameters
    ----------
    report_json
        A run's ``report.json``; its folder is the output folder the page links into.
    html_path
        Where to write the page; default ``report.html`` in the same folder. Links stay
        relative to the report's folder, so put the page there to keep them working.
    output_dir
        The output folder the page will sit in and link into, when it is not the report's
        folder: a batch on object storage writes the page locally for the prefix
        (``s3://bucket/out``) it uploads it to.

    Returns
    -------
    Path
        The page written.
    """
    source = Path(report_json)
    report = json.loads(source.read_text(encoding="utf-8"))
    if not isinstance(report, Mapping):
        raise ValueError(f"{source}: not a slidemask run report (a JSON object)")
    final = Path(html_path) if html_path is not None else source.with_name(REPORT_HTML)
    text = render_html_report(report, source.parent if output_dir is None else output_dir)
    with atomic_write(final) as fh:
        fh.write(text)
    return final


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline';
 script-src 'unsafe-inline'">
<title>@TITLE@</title>
<style>@CSS@</style>
</head>
<body>
<header>
<h1>@TITLE@</h1>
<p id="run"></p>
<p id="counts"></p>
<div id="controls">
<input id="q" type="search" placeholder="filter: name, error, warning" aria-label="filter">
<select id="status" aria-label="status"><option value="">all statuses</option>
<option>done</option><option>skipped</option><option>failed</option></select>
<label><input id="outliers" type="checkbox"> outliers only</label>
<label><input id="warned" type="checkbox"> with warnings</label>
<span class="views"><button id="view-table" type="button">table</button><button
id="view-gallery" type="button">gallery</button></span>
<span id="shown"></span>
</div>
<p id="hint"></p>
</header>
<main>
<table id="slides"><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table>
<div id="gallery" hidden></div>
</main>
<script type="application/json" id="slidemask-data">@DATA@</script>
<script>@SCRIPT@</script>
</body>
</html>
"""

_CSS = """
:root{--fg:#1d232a;--muted:#5c6670;--line:#d9dee3;--bg:#fff;--head:#f3f5f7;
--done:#1a7f37;--skipped:#57606a;--failed:#cf222e;--warn:#9a6700;--out:#fff1c2}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{padding:12px 16px;border-bottom:1px solid var(--line);background:var(--head)}
h1{font-size:18px;margin:0 0 4px}
header p{margin:2px 0;color:var(--muted)}
#controls{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;margin-top:8px}
#q{width:260px;padding:4px 6px}
.views button{padding:3px 10px;border:1px solid var(--line);background:#fff;cursor:pointer}
.views button.on{background:#dbe9ff;border-color:#8cb4f0}
#hint{font-size:12px}
main{padding:0 16px 40px}
/* A grid per row instead of table layout: rows off screen skip layout and paint
   (content-visibility), so a thousand slides lay out as fast as a screenful. */
table,thead,tbody{display:block}
table{width:100%}
thead{position:sticky;top:0;z-index:1;background:#fff}
tr{display:grid;grid-template-columns:var(--cols)}
tbody tr{content-visibility:auto;contain-intrinsic-size:auto 70px}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;min-width:0;
overflow-wrap:anywhere}
th{cursor:pointer;user-select:none;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.num{text-align:right}
td.thumb img,td.thumb .ph{width:80px;height:60px;object-fit:contain;display:block}
.ph{display:flex;align-items:center;justify-content:center;background:#eef1f4;
color:var(--muted);font-size:11px;text-align:center}
.st{font-weight:600}
.st.done{color:var(--done)}.st.skipped{color:var(--skipped)}.st.failed{color:var(--failed)}
.err{color:var(--failed)}
.warn{color:var(--warn)}
.out{background:var(--out)}
.flag{display:inline-block;margin:0 4px 2px 0;padding:0 4px;border-radius:3px;
background:#f5c542;color:#3d2e00;font-size:11px;font-weight:600}
.links a{margin-right:6px}
.name{font-weight:600}
.path{color:var(--muted);font-size:12px}
#gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px;
padding-top:12px}
figure{margin:0;border:1px solid var(--line);border-radius:4px;padding:6px;background:#fff;
content-visibility:auto;contain-intrinsic-size:auto 240px}
figure img,figure .ph{width:100%;height:170px;object-fit:contain;display:flex}
figure.failed{border-color:var(--failed)}figure.outlier{background:var(--out)}
figcaption{font-size:12px;margin-top:4px;overflow-wrap:anywhere}
#selftest{display:none}
"""

_SCRIPT = r"""
(() => {
"use strict";
const started = performance.now();
const D = JSON.parse(document.getElementById("slidemask-data").textContent);
const slides = D.slides;
const $ = (id) => document.getElementById(id);
const LINKS = {zarr: "zarr", ome_zarr: "ome.zarr", geojson: "geojson", preview: "png",
               summary: "json"};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
const missing = (v) => v === null || v === undefined;
const fixed = (v, digits) => missing(v) ? "" : Number(v).toFixed(digits);
const pct = (v) => missing(v) ? "" : (100 * v).toFixed(1) + " %";
const share = (s, name) => s.classes[name] ? s.classes[name][0] : null;
const metricName = (m) => m === "fraction" ? "tissue" : m.slice(6);
const worstZ = (s) => Math.max(...s.outlier.map((m) => Math.abs(s.z[m])));

// The columns: label, grid width, sort value, cell text; "metric" marks outlier metrics.
const columns = [
  {key: "thumb", label: "preview", width: "88px", sortable: false},
  {key: "name", label: "slide", width: "minmax(150px, 2fr)", value: (s) => s.name.toLowerCase()},
  {key: "status", label: "status", width: "72px", value: (s) => s.status},
  {key: "fraction", label: "tissue %", num: true, width: "96px", metric: "fraction",
   value: (s) => s.fraction, text: (s) => pct(s.fraction)},
  {key: "area_mm2", label: "tissue mm\u00b2", num: true, width: "106px",
   value: (s) => s.area_mm2, text: (s) => fixed(s.area_mm2, 2)},
];
for (const name of D.classes) {
  columns.push({
    key: "class:" + name, label: name + " %", num: true, width: "96px", metric: "class:" + name,
    value: (s) => share(s, name), text: (s) => pct(share(s, name)),
    title: (s) => s.classes[name] && !missing(s.classes[name][1])
      ? fixed(s.classes[name][1], 3) + " mm\u00b2" : "",
  });
}
columns.push(
  {key: "components", label: "components", num: true, width: "112px",
   value: (s) => s.components, text: (s) => missing(s.components) ? "" : String(s.components)},
  {key: "outlier", label: "outlier", width: "120px",
   value: (s) => s.outlier.length ? -worstZ(s) : null},
  {key: "warnings", label: "warnings", width: "minmax(110px, 1.5fr)",
   value: (s) => s.warnings.length || null},
  {key: "seconds", label: "seconds", num: true, width: "90px",
   value: (s) => s.seconds, text: (s) => fixed(s.seconds, 1)},
  {key: "error", label: "error", width: "minmax(140px, 2fr)",
   value: (s) => s.error ? s.error.toLowerCase() : null},
  {key: "links", label: "outputs", width: "130px", sortable: false},
);
const byKey = Object.fromEntries(columns.map((c) => [c.key, c]));
$("slides").style.setProperty("--cols", columns.map((c) => c.width).join(" "));

const EAGER = 24;  // the first screenful of thumbnails loads at once, the rest when scrolled to

function thumbnail(s, eager) {
  const box = s.links.preview ? el("a") : null;
  let inner;
  if (s.thumb) {
    inner = el("img");
    inner.loading = eager ? "eager" : "lazy";
    inner.decoding = "async";
    inner.src = s.thumb;
    inner.alt = s.name;
  } else {
    inner = el("div", "ph", s.status === "failed" ? "failed" : "no preview");
  }
  if (!box) return inner;
  box.href = s.links.preview;
  box.appendChild(inner);
  return box;
}

function cell(c, s, eager) {
  const td = el("td", c.num ? "num" : "");
  switch (c.key) {
    case "thumb":
      td.className = "thumb";
      td.appendChild(thumbnail(s, eager));
      break;
    case "name":
      td.appendChild(el("div", "name", s.name));
      td.appendChild(el("div", "path", s.path));
      break;
    case "status":
      td.appendChild(el("span", "st " + s.status, s.status));
      break;
    case "outlier":
      for (const m of s.outlier) {
        td.appendChild(el("span", "flag", metricName(m) + " z " + s.z[m].toFixed(1)));
      }
      break;
    case "warnings":
      td.className = "warn";
      td.textContent = s.warnings.join("; ");
      break;
    case "error":
      td.className = "err";
      td.textContent = s.error || "";
      break;
    case "links":
      td.className = "links";
      for (const k of Object.keys(s.links)) {
        const a = el("a", "", LINKS[k] || k);
        a.href = s.links[k];
        td.appendChild(a);
      }
      break;
    default: {
      td.textContent = c.text(s);
      const notes = [];
      if (c.title && c.title(s)) notes.push(c.title(s));
      if (c.metric && !missing(s.z[c.metric])) notes.push("robust z " + s.z[c.metric]);
      if (notes.length) td.title = notes.join(", ");
      if (c.metric && s.outlier.includes(c.metric)) td.classList.add("out");
    }
  }
  return td;
}

function buildRow(s, eager) {
  const tr = el("tr", s.outlier.length ? "outlier" : "");
  tr.dataset.name = s.name;
  for (const c of columns) tr.appendChild(cell(c, s, eager));
  return tr;
}

function buildCard(s) {
  const f = el("figure", s.status + (s.outlier.length ? " outlier" : ""));
  f.appendChild(thumbnail(s, false));
  const cap = el("figcaption");
  cap.appendChild(el("span", "st " + s.status, s.status + " "));
  cap.appendChild(document.createTextNode(s.name + "  " + pct(s.fraction)));
  for (const m of s.outlier) cap.appendChild(el("span", "flag", metricName(m)));
  if (s.error) cap.appendChild(el("div", "err", s.error));
  f.appendChild(cap);
  return f;
}

// the header: click (or Enter) sorts, again reverses
const headers = {};
for (const c of columns) {
  const th = el("th", c.num ? "num" : "", c.label);
  th.title = c.label;
  th.dataset.key = c.key;
  if (c.sortable === false) {
    th.style.cursor = "default";
  } else {
    th.tabIndex = 0;
    th.addEventListener("click", () => setSort(state.sort === c.key ? "-" + c.key : c.key));
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") th.click(); });
  }
  headers[c.key] = th;
  $("head").appendChild(th);
}

// Every row is built once (cards on first use); sorting and filtering reorder this array and
// append the visible rows in one pass.
let items = slides.map((s, i) => ({
  s, i, tr: buildRow(s, i < EAGER), card: null,
  hay: [s.name, s.path, s.status, s.error || "", ...s.warnings].join(" ").toLowerCase(),
}));

const state = {sort: "", q: "", status: "", outliers: false, warned: false, view: "table"};

function readHash() {
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    if (!part) continue;
    const at = part.indexOf("=");
    const k = decodeURIComponent(at < 0 ? part : part.slice(0, at));
    const v = at < 0 ? "" : decodeURIComponent(part.slice(at + 1));
    if (k === "sort") state.sort = v;
    else if (k === "q") state.q = v;
    else if (k === "status") state.status = v;
    else if (k === "outliers") state.outliers = v === "1";
    else if (k === "warnings") state.warned = v === "1";
    else if (k === "view") state.view = v === "gallery" ? "gallery" : "table";
  }
}

function writeHash() {
  const parts = [];
  if (state.sort) parts.push("sort=" + encodeURIComponent(state.sort));
  if (state.q) parts.push("q=" + encodeURIComponent(state.q));
  if (state.status) parts.push("status=" + encodeURIComponent(state.status));
  if (state.outliers) parts.push("outliers=1");
  if (state.warned) parts.push("warnings=1");
  if (state.view !== "table") parts.push("view=gallery");
  const url = parts.length ? "#" + parts.join("&") : location.pathname + location.search;
  try { history.replaceState(null, "", url); } catch (e) { /* some browsers, on file: */ }
}

function sortItems() {
  const key = state.sort.replace(/^-/, "");
  const desc = state.sort.startsWith("-");
  const c = byKey[key];
  for (const th of Object.values(headers)) th.removeAttribute("aria-sort");
  if (!c || c.sortable === false) {
    items.sort((a, b) => a.i - b.i);
    return;
  }
  headers[key].setAttribute("aria-sort", desc ? "descending" : "ascending");
  const keyed = items.map((it) => ({it, v: c.value(it.s)}));
  keyed.sort((x, y) => {
    const xm = missing(x.v), ym = missing(y.v);
    if (xm || ym) return xm && ym ? x.it.i - y.it.i : xm ? 1 : -1;  // missing values last
    const r = x.v < y.v ? -1 : x.v > y.v ? 1 : 0;
    return (desc ? -r : r) || x.it.i - y.it.i;
  });
  items = keyed.map((k) => k.it);
}

function visible(it) {
  const s = it.s;
  if (state.status && s.status !== state.status) return false;
  if (state.outliers && !s.outlier.length) return false;
  if (state.warned && !s.warnings.length) return false;
  return !state.q || it.hay.includes(state.q.toLowerCase());
}

function render() {
  const shown = items.filter(visible);
  const gallery = state.view === "gallery";
  $("slides").hidden = gallery;
  $("gallery").hidden = !gallery;
  $("view-table").className = gallery ? "" : "on";
  $("view-gallery").className = gallery ? "on" : "";
  const frag = document.createDocumentFragment();
  for (const it of shown) {
    if (gallery && !it.card) it.card = buildCard(it.s);
    frag.appendChild(gallery ? it.card : it.tr);
  }
  const target = gallery ? $("gallery") : $("rows");
  target.textContent = "";
  target.appendChild(frag);
  $("shown").textContent = shown.length + " of " + items.length + " shown";
}

function update() { sortItems(); render(); writeHash(); }
function setSort(key) { state.sort = key; update(); }
function setState(change) { Object.assign(state, change); render(); writeHash(); }
function syncControls() {
  $("q").value = state.q;
  $("status").value = state.status;
  $("outliers").checked = state.outliers;
  $("warned").checked = state.warned;
}

let timer = null;
$("q").addEventListener("input", () => {
  clearTimeout(timer);
  timer = setTimeout(() => setState({q: $("q").value}), 120);
});
$("status").addEventListener("change", () => setState({status: $("status").value}));
$("outliers").addEventListener("change", () => setState({outliers: $("outliers").checked}));
$("warned").addEventListener("change", () => setState({warned: $("warned").checked}));
$("view-table").addEventListener("click", () => setState({view: "table"}));
$("view-gallery").addEventListener("click", () => setState({view: "gallery"}));
window.addEventListener("hashchange", () => { readHash(); syncControls(); sortItems(); render(); });

// the run in one line, and the counts
const run = D.run, counts = run.counts || {};
const bits = [];
if (run.slidemask_version) bits.push("slidemask " + run.slidemask_version);
if (run.finished) bits.push("finished " + run.finished);
if (!missing(run.seconds)) bits.push(Number(run.seconds).toFixed(1) + " s");
if (run.executor) bits.push(run.executor);
if (run.config_hash) bits.push("config " + String(run.config_hash).slice(0, 12));
$("run").textContent = bits.join(" \u00b7 ");
const nOutliers = slides.filter((s) => s.outlier.length).length;
const nWarned = slides.filter((s) => s.warnings.length).length;
$("counts").textContent =
  `${counts.done || 0} done, ${counts.skipped || 0} skipped, ${counts.failed || 0} failed; ` +
  `${nOutliers} outlier(s) (|robust z| > ${D.outlier_z}), ${nWarned} with QC warnings`;
$("hint").textContent = (D.previews ? "" : "No previews: add outputs: {preview: true, " +
  "summary: true} to the config to see thumbnails here. ") + "Click a column to sort; " +
  `outliers need at least ${D.min_cohort} slides with a value. Data: report.json, report.csv.`;

readHash();
syncControls();
update();
document.body.dataset.renderMs = (performance.now() - started).toFixed(1);

// ?selftest: drive the page as a user would and write what it showed (for headless tests)
if (/[?&]selftest\b/.test(location.search)) {
  const names = () => Array.from($("rows").children, (tr) => tr.dataset.name);
  const result = {initial: names()};
  headers.fraction.click();
  result.fraction_ascending = names();
  headers.fraction.click();
  result.fraction_descending = names();
  $("status").value = "failed";
  $("status").dispatchEvent(new Event("change"));
  result.failed = names();
  $("status").value = "";
  $("status").dispatchEvent(new Event("change"));
  setState({view: "gallery"});
  result.cards = $("gallery").children.length;
  setState({view: "table"});
  result.hash = location.hash;
  result.render_ms = Number(document.body.dataset.renderMs);
  const t = performance.now();
  void document.body.offsetHeight;  // style and layout of the whole page, as a first paint
  result.layout_ms = performance.now() - t;
  result.ready_ms = performance.now();
  const pre = el("pre", "", JSON.stringify(result));
  pre.id = "selftest";
  document.body.appendChild(pre);
}
})();
"""
