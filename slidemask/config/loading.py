"""Loading configurations: YAML text or files to a validated :class:`Config`, with errors
that name the file and the key path.

YAML is read with a safe loader that rejects duplicate keys (LibYAML's parser where PyYAML
has it). Validation errors become one line per problem,
``<source>: <key path>: <what is wrong>``, e.g.
``threshold.yaml: masks.tissue[1].threshold.abve: unknown key (allowed: above, below)``;
an unknown step lists the known ones (:data:`slidemask.config.steps.STEPS`).

:data:`DEFAULT_CONFIG_YAML` is the built-in default configuration (tissue minus blue and
green pen ink), and :func:`default_config` its validated form.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from slidemask.config.expression import parse_expression
from slidemask.config.models import Classes, Config, MaskSpec, Outputs, Resolution
from slidemask.config.steps import STEPS
from slidemask.distributed import ExecutionConfig
from slidemask.errors import ConfigError

log = logging.getLogger("slidemask")

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "config_from_yaml",
    "default_config",
    "load_config",
    "parse_config",
]


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that rejects duplicate keys (plain YAML keeps the last one silently).
    LibYAML's parser where PyYAML has it (about 6 times faster), else the pure-Python one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            mark = key_node.start_mark
            raise ConfigError(f"line {mark.line + 1}: duplicate key {key!r}")
        try:
            seen.add(key)
        except TypeError:
            pass  # an unhashable key (a YAML list as key) cannot repeat a hashable one
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)

# YAML 1.1 (PyYAML) reads 1e4 and 1.5e3 as text: its floats need a dot and a signed exponent.
# Numbers written as in YAML 1.2, Python and JSON are numbers here too.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    if len(loc) == 1:
        return list(Config.model_fields)
    if loc[0] == "resolution" and len(loc) == 2:
        return list(Resolution.model_fields)
    if loc[0] == "outputs" and len(loc) == 2:
        return list(Outputs.model_fields)
    if loc[0] == "execution" and len(loc) == 2:
        return list(ExecutionConfig.model_fields)
    if loc[0] == "classes" and len(loc) == 2:
        return list(Classes.model_fields)
    if loc[0] == "tiles" and len(loc) == 2:
        from slidemask.tiles.spec import TileSpec

        return list(TileSpec.model_fields)
    if loc[0] == "masks" and len(loc) == 3:
        return list(MaskSpec.model_fields)
    if loc[0] == "masks" and len(loc) == 4 and loc[2] == "resolution":
        return list(Resolution.model_fields)
    step = _step_path(loc)
    if step[0] == "masks" and len(step) == 5 and step[3] in STEPS:
        return list(STEPS[step[3]].params.model_fields)
    return None


def _without_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without the tag pydantic adds for a mask's form (a list of steps, or a mapping
    with ``resolution`` and ``steps``), so paths read as the YAML is written."""
    if loc[:1] == ("masks",) and len(loc) >= 3 and loc[2] in ("list", "mapping"):
        return loc[:2] + loc[3:]
    return loc


def _step_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``masks.<name>.steps[i]...`` as ``masks.<name>[i]...``, to classify either form alike."""
    if loc[:1] == ("masks",) and len(loc) >= 4 and loc[2] == "steps" and isinstance(loc[3], int):
        return loc[:2] + loc[3:]
    return loc


def _did_you_mean(name: Any, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to a misspelled ``name``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}" if close else ""


def _describe(error: Mapping[str, Any]) -> str:
    loc = _without_union_tags(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        step = _step_path(loc)
        if step[:1] == ("masks",) and len(step) == 4 and isinstance(step[2], int):
            return (f"{_location(loc)}: unknown step {loc[-1]!r}{_did_you_mean(loc[-1], STEPS)}; "
                    "known steps: " + ", ".join(STEPS))
        allowed = _allowed_keys(loc)
        extra = f" (allowed: {', '.join(allowed)})" if allowed else ""
        hint = _did_you_mean(loc[-1], allowed or [])
        return f"{_location(loc)}: unknown key{extra}{hint}"
    if loc[-1:] == ("[key]",) and loc[:1] == ("masks",):
        return (
            f"{_location(loc[:-1])}: mask names are identifiers (letters, digits and _, not "
            "starting with a digit), so that output expressions can name them"
        )
    if kind == "too_short" and loc == ("masks",):
        return "masks: at least one mask is needed, e.g. tissue: [gray, {threshold: {below: 220}}]"
    if kind == "missing":
        if loc == ("output",):
            return (
                "output: required key missing: with several masks, say how to combine them, "
                "e.g. output: \"tissue & ~pen\""
            )
        return f"{_location(loc)}: required key missing"
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    else:
        if "input" in error and not isinstance(error["input"], (dict, list)):
            message += f" (got {error['input']!r})"
    key = re.match(r"(values|precedence): ", message)
    if key and loc == ("classes",):  # a check of several keys that names the one at fault
        loc, message = ("classes", key.group(1)), message[key.end() :]
    numbered = re.match(r"step \[(\d+)\] ", message)
    if numbered and loc[:1] == ("masks",):  # a chain's message names its step: masks.t[1]: ...
        loc, message = (*_step_path(loc), int(numbered.group(1))), message[numbered.end() :]
    return f"{_location(loc)}: {message}"


def parse_config(data: Any, *, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data; errors name ``source`` and the key path.

    Parameters
    ----------
    data : mapping
        The configuration as plain data (a parsed YAML or JSON document).
    source : str
        Names the configuration in error messages (a file name).

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    ConfigError
        One line per problem: ``<source>: <key path>: <what is wrong>``.

    Examples
    --------
    >>> from slidemask.config import parse_config
    >>> config = parse_config({"resolution": {"downsample": 16},
    ...                        "masks": {"tissue": [{"gray": {}}, {"threshold": {"below": 220}}]}})
    >>> config.resolution.downsample, list(config.masks)
    (16.0, ['tissue'])
    """
    if data is None:
        raise ConfigError(f"{source}: the configuration is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the configuration must be a mapping of keys "
            f"(resolution, masks, output, chunk_size, outputs, execution), got "
            f"{type(data).__name__}"
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        if any(tuple(e.get("loc", ())) == ("masks",) for e in errors):
            # no usable masks: that they are not combined by an output is no second problem
            errors = [e for e in errors if tuple(e.get("loc", ())) != ("output",)]
        lines = list(dict.fromkeys(_describe(e) for e in errors))
        raise ConfigError("\n".join(f"{source}: {line}" for line in lines)) from None
    used = set(config.expression.names())
    if config.classes is not None:
        for text in config.classes.masks.values():
            used |= parse_expression(text).names()
    unused = [name for name in config.masks if name not in used]
    if unused:
        log.warning("%s: masks %s are named by neither output nor classes, so they are not "
                    "computed", source, ", ".join(unused))
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML configuration file (safe loader; duplicate keys rejected).

    Parameters
    ----------
    path : str or os.PathLike
        A UTF-8 YAML file (the format is described in :mod:`slidemask.config`; the
        ``configs/`` folder holds examples).

    Returns
    -------
    Config
        The validated configuration, for :func:`slidemask.build_mask`,
        :func:`slidemask.run_slide` and :func:`slidemask.run_batch`.

    Raises
    ------
    ConfigError
        The file is missing, unreadable, not YAML, or invalid; the message names the file
        and the key path.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from slidemask import ConfigError, load_config
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "tissue.yaml")
    >>> with open(path, "w") as fh:
    ...     print("resolution: {mpp: 8}", file=fh)
    ...     print("masks:", file=fh)
    ...     print("  tissue: [{gray: {}}, {threshold: {below: 220}}]", file=fh)
    >>> config = load_config(path)
    >>> config.resolution.mpp, [step.name for step in config.masks["tissue"]]
    (8.0, ['gray', 'threshold'])
    >>> try:
    ...     load_config(os.path.join(tmp.name, "missing.yaml"))
    ... except ConfigError as error:
    ...     print(str(error).endswith("missing.yaml: configuration file not found"))
    True
    >>> tmp.cleanup()
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the configuration ({exc})") from None
    return config_from_yaml(text, source=source)


def config_from_yaml(text: str, *, source: str = "<string>") -> Config:
    """Validate a configuration given as YAML text (see :func:`load_config`).

    Parameters
    ----------
    text : str
        The YAML document.
    source : str
        Names the configuration in error messages.

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    ConfigError
        Not YAML (with line and column), a duplicate key, or invalid; one line per
        problem, ``<source>: <key path>: <what is wrong>``.

    Examples
    --------
    >>> from slidemask import ConfigError
    >>> from slidemask.config import config_from_yaml
    >>> config = config_from_yaml('''
    ... resolution: {mpp: 8}
    ... masks:
    ...   tissue: [{gray: {}}, {threshold: {below: 220}}, {closing: {radius_um: 16}}]
    ... ''')
    >>> [step.name for step in config.masks["tissue"]]
    ['gray', 'threshold', 'closing']
    >>> try:
    ...     config_from_yaml("masks: {tissue: [{threshold: {abve: 3}}]}", source="t.yaml")
    ... except ConfigError as error:
    ...     print(error)
    t.yaml: masks.tissue[0].threshold.abve: unknown key (allowed: above, below);
    did you mean 'above'
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: {where}not valid YAML ({problem})") from None
    return parse_config(data, source=source)


DEFAULT_CONFIG_YAML = """\
# Tissue minus blue and green pen ink (slidemask's default; `slidemask demo` runs a built-in
# copy of this file). Radii and kernel sizes are in pixels of the working level.
#
# tissue: H&E tissue is darker than the bright glass background (grey about 235-245).
# pen inks: strongly coloured, in OpenCV HSV units (H 0-179 = degrees / 2, S and V 0-255).
#   Dark hematoxylin nuclei are blue too (H 115-128 on CMU-1), so each pen range is opened
#   by a disk wider than a nucleus before it is grown to cover the stroke's faint rim.
resolution: {level: 0}
masks:
  tissue:
    - gray: {}                    # RGB -> grey, uint8 0-255 (OpenCV luma)
    - median_blur: {ksize: 7}     # 7x7 median: removes JPEG noise and isolated pixels
    - threshold: {below: 220}     # grey < 220 is tissue (or ink)
    - closing: {radius: 4}        # close gaps narrower than ~8 px
  blue_pen:
    - hsv_range: {lower: [100, 80, 30], upper: [128, 255, 255]}
    - opening: {radius: 3}        # drops nuclei-sized blue spots; pen strokes are far wider
    - dilation: {radius: 5}
  green_pen:
    - hsv_range: {lower: [40, 60, 30], upper: [85, 255, 255]}
    - opening: {radius: 3}
    - dilation: {radius: 5}
output: "tissue & ~(blue_pen | green_pen)"
chunk_size: 2048                  # working chunk edge in pixels (any value gives the same mask)
"""


def default_config() -> Config:
    """The built-in default configuration (tissue minus blue/green pen ink).

    Returns
    -------
    Config
        :data:`DEFAULT_CONFIG_YAML`, validated.

    Examples
    --------
    >>> from slidemask.config import default_config
    >>> config = default_config()
    >>> list(config.masks), config.resolution.level
    (['tissue', 'blue_pen', 'green_pen'], 0)
    """
    return config_from_yaml(DEFAULT_CONFIG_YAML, source="<built-in default config>")

