"""MkDocs hook: the parts of the docs that are generated from the code, at build time.

A page asks for a generated block with an HTML comment on a line of its own:

``<!-- generated: config-keys -->``
    the configuration's top-level keys and every nested section, from the pydantic models
    (:class:`slidemask.config.Config` and the models its fields use);
``<!-- generated: steps -->``
    every step of :data:`slidemask.config.STEPS`: the public function it calls, what it takes
    and gives, how far it looks, and its parameters with types, units and defaults;
``<!-- generated: presets -->``
    every shipped configuration in ``configs/``, with its comments (which say where each
    preset comes from);
``<!-- generated: cli -->``
    the ``--help`` of the command and of each subcommand.

It also runs ``slidemask demo`` (a small slide, a few seconds) and adds its preview and
``report.html`` to the site under ``img/demo/``, for the getting-started page.

Nothing here is written by hand, so the reference cannot drift from the code. Registered in
``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


# --- types, defaults, units -------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    """A reader's name for a type annotation: ``int | None``, ``list of int``, ``mapping``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        names = list(dict.fromkeys(names))
        none = " | None" if type(None) in args else ""
        return " | ".join(names) + none
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"list of {inner}" if inner else "list"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel) and annotation.__module__.endswith(".steps"):
            return "[step](#steps)"  # one step of a mask: the section Steps lists them
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{_anchor(annotation)})"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _anchor(model: type[BaseModel]) -> str:
    return f"section-{model.__name__.lower()}"


def _default(info: Any) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default if info.default_factory is None else info.default_factory()
    if isinstance(value, BaseModel):
        return "see its section"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def _unit(name: str, description: str) -> str:
    text = description.lower()
    if name.endswith("_um2") or "square micrometre" in text:
        return "µm²"
    if name.endswith("_um") or "micrometre" in text:
        return "µm"
    if "pixel" in text:
        return "pixels"
    if "grey level" in text or "0-255" in text:
        return "image scale"
    return ""


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, ``<name>`` shown as text, not taken as HTML."""
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


# Fields of slidemask.config.Config that carry no description of their own.
_CONFIG_KEYS = {
    "resolution": "the working resolution: one of level, mpp (µm per pixel) or downsample",
    "masks": "named masks: each a list of steps applied in order (see Steps)",
    "output": "the output mask: mask names combined with & | ~ and parentheses",
}


def _field_table(model: type[BaseModel], *, units: bool) -> list[str]:
    fields = model.model_fields
    if not fields:
        return ["No parameters.", ""]
    header = "| key | type | default | unit | description |" if units else \
        "| key | type | default | description |"
    lines = [header, "|" + "---|" * (5 if units else 4)]
    for name, info in fields.items():
        description = info.description or ""
        row = [f"`{name}`", _cell(_type_name(info.annotation)), _default(info)]
        if units:
            row.append(_unit(name, description) or "—")
        row.append(_cell(description) or "—")
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


# --- blocks -----------------------------------------------------------------------------------


def _nested_models(model: type[BaseModel], skip: set[type[BaseModel]]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in skip and annotation not in found:
                found.append(annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    for info in model.model_fields.values():
        visit(info.annotation)
    return found


def config_keys() -> str:
    from slidemask.config import Config
    from slidemask.config.steps import Step

    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in Config.model_fields.items():
        description = info.description or _CONFIG_KEYS.get(name, "—")
        lines.append(f"| `{name}` | {_cell(_type_name(info.annotation))} | {_default(info)} | "
                     f"{_cell(description)} |")
    lines.append("")
    skip: set[type[BaseModel]] = {Config, Step}
    queue = _nested_models(Config, skip)
    done: list[type[BaseModel]] = []
    while queue:
        model = queue.pop(0)
        if model in done or model in skip or model.__module__.startswith("slidemask.config.steps"):
            continue
        done.append(model)
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f'### {model.__name__} {{ #{_anchor(model)} }}', "",
                  f"`{model.__module__}.{model.__name__}`" + (f": {doc}" if doc else ""), ""]
        lines += _field_table(model, units=True)
        queue += [m for m in _nested_models(model, skip) if m not in done]
    return "\n".join(lines)


_KIND_WORDS = {"color": "colour image", "gray": "one-channel image", "mask": "bool mask"}


def steps() -> str:
    from slidemask.config import STEPS

    lines = ["| step | takes | gives | looks at | calls |", "|---|---|---|---|---|"]
    for name, spec in STEPS.items():
        takes = ", ".join(_KIND_WORDS.get(k, k) for k in sorted(spec.accepts))
        gives = _KIND_WORDS.get(spec.returns, spec.returns) if spec.returns else "same as input"
        function = f"{spec.function.__module__}.{spec.function.__name__}"
        lines.append(f"| [`{name}`](#step-{name}) | {takes} | {gives} | {spec.scope} | "
                     f"`{function}` |")
    lines.append("")
    for name, spec in STEPS.items():
        function = f"{spec.function.__module__}.{spec.function.__name__}"
        summary = spec.summary.split(":", 1)[-1].strip()
        lines += [f"### `{name}` {{ #step-{name} }}", "", f"{summary}.", "",
                  f"Calls `{function}`; parameters: `{spec.params.__name__}`. "
                  f"Looks at: {spec.scope}.", ""]
        doc = (spec.params.__doc__ or "").strip()
        if doc and not doc.startswith("Base of"):
            lines += [doc, ""]
        lines += _field_table(spec.params, units=True)
    return "\n".join(lines)


_ANCHORS = ("clam", "pathml", "qupath", "qc")


def _intro(text: str) -> str:
    """The first paragraph of a config file's leading comment."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if not body:
            if words:
                break
            continue
        words.append(body)
    return " ".join(words)


def _recipe(data: Any) -> str:
    masks = data.get("masks") if isinstance(data, dict) else None
    if not isinstance(masks, dict):
        return ""
    parts = []
    for name, entry in masks.items():
        steps = entry if isinstance(entry, list) else (entry or {}).get("steps", [])
        names = [next(iter(step)) for step in steps if isinstance(step, dict) and step]
        parts.append(f"`{name}`: " + ", ".join(names))
    output = data.get("output")
    return "; ".join(parts) + (f"; output `{output}`" if output else "")


def presets() -> str:
    import yaml

    def order(path: Path) -> tuple[int, int, str]:  # the anchor presets first
        anchor = path.stem in _ANCHORS
        return (0 if anchor else 1, _ANCHORS.index(path.stem) if anchor else 0, path.stem)

    files = sorted((ROOT / "configs").glob("*.yaml"), key=order)
    table = ["| preset | what it is, from its comments | steps | resolution |",
             "|---|---|---|---|"]
    sections: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        resolution = data.get("resolution", {"level": 0}) if isinstance(data, dict) else {}
        table.append(f"| [`{path.name}`](#preset-{path.stem}) | {_cell(_intro(text))} | "
                     f"{_cell(_recipe(data))} | `{_cell(str(resolution))}` |")
        sections += [f"### `configs/{path.name}` {{ #preset-{path.stem} }}", "",
                     _intro(text), "", '??? example "The file, with its notes"', "",
                     "    ```yaml"]
        sections += [f"    {line}".rstrip() for line in text.splitlines()]
        sections += ["    ```", ""]
    return "\n".join([*table, "", *sections])


def cli() -> str:
    from slidemask.cli import main

    commands = ["", "run", "info", "preview", "demo", "cluster-script", "tiles"]
    lines: list[str] = []
    os.environ["COLUMNS"] = "96"  # argparse wraps help to the terminal width
    for command in commands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            status = main([command, "--help"] if command else ["--help"])
        if status != 0:
            continue  # a subcommand this version does not have
        lines += [f"### `slidemask{' ' + command if command else ''}`", "", "```text",
                  out.getvalue().rstrip(), "```", ""]
    return "\n".join(lines)


_BLOCKS = {"config-keys": config_keys, "steps": steps, "presets": presets, "cli": cli}

DEMO_SIZE = 2048
"""Edge of the demo slide whose preview and report the getting-started page shows."""


def on_files(files: Any, config: Any) -> Any:
    """Add the demo's preview and report (``img/demo/``), made now by ``slidemask demo``."""
    import tempfile

    from mkdocs.structure.files import File

    from slidemask.cli import main

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "demo"
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["demo", "--size", str(DEMO_SIZE), "--output", str(out), "-q"])
        if status != 0:
            raise RuntimeError(f"slidemask demo failed (exit status {status})")
        for name in ("synthetic.png", "synthetic.json", "report.html", "report.json"):
            files.append(File.generated(config, f"img/demo/{name}",
                                        content=(out / name).read_bytes()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each ``<!-- generated: NAME -->`` line with the block NAME."""

    def block(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _BLOCKS:
            raise ValueError(f"{page.file.src_path}: unknown generated block {name!r}; "
                             f"known: {', '.join(_BLOCKS)}")
        return _BLOCKS[name]()

    return _MARKER.sub(block, markdown)
