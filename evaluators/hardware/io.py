"""Readers for the hardware model's input files: SCALE-Sim topology CSVs, accelerator YAMLs.

Both readers raise ``InputError(path, key, message)`` for anything wrong with the file; the
key is ``row N: <column>`` (N is the 1-based line number) for the CSV and the YAML key for
the accelerator file. Nothing in a file is ever executed (YAML goes through
``yaml.safe_load``). An accelerator file with ``template: gpu`` becomes a ``GpuSpec``
(evaluators.hardware.gpu), ``template: eyeriss`` an ``EyerissSpec``
(evaluators.hardware.eyeriss); any other becomes an ``AcceleratorSpec``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import yaml

from evaluators.hardware import eyeriss, fpga, gpu
from evaluators.hardware.base import type_name
from evaluators.hardware.eyeriss import EyerissSpec
from evaluators.hardware.gpu import GpuSpec
from evaluators.hardware.systolic import (
    CHOICE_FIELDS,
    NONNEG_FLOAT_FIELDS,
    validate_accelerator,
)
from evaluators.specs import (
    TEMPLATES,
    AcceleratorSpec,
    ConvLayer,
    InputError,
)

# --------------------------------------------------------------------------- layers CSV

# SCALE-Sim's topology columns, in order (its own header spelling).
CSV_COLUMNS = (
    "Layer name",
    "IFMAP Height",
    "IFMAP Width",
    "Filter Height",
    "Filter Width",
    "Channels",
    "Num Filter",
    "Strides",
)


# Optional columns after the SCALE-Sim ones, found by their header (case and the spelling of
# the separator do not matter): the fraction of non-zero inputs / weights of each row's layer.
DENSITY_COLUMNS = {"inputdensity": "input_density", "weightdensity": "weight_density"}


def _density_columns(path: str, line: int, header: list[str]) -> dict[int, str]:
    """``{cell index: ConvLayer field}`` for the density columns a header names.

    Raises:
        InputError: a density column is named twice (key ``row N: <column>``).
    """
    found: dict[int, str] = {}
    for i, cell in enumerate(header[len(CSV_COLUMNS):], start=len(CSV_COLUMNS)):
        key = "".join(ch for ch in cell.lower() if ch.isalnum())
        if key in DENSITY_COLUMNS:
            if DENSITY_COLUMNS[key] in found.values():
                raise InputError(path, f"row {line}: {cell}",
                                 "a density column named twice in the header")
            found[i] = DENSITY_COLUMNS[key]
    return found


def scalesim_layer(name: str, ifmap_h: int, ifmap_w: int, filter_h: int, filter_w: int,
                   channels: int, num_filters: int, stride: int, **extra: Any) -> ConvLayer:
    """One SCALE-Sim topology row as a ``ConvLayer`` (8-bit operands, no padding, batch 1).

    SCALE-Sim's convention: a row whose name contains ``DP`` is depthwise, ``num_filters``
    filters per channel; it becomes a grouped conv with ``groups = channels``. ``extra``:
    further ``ConvLayer`` fields (the CSV's density columns).
    """
    groups = channels if "DP" in name else 1
    return ConvLayer(name=name, ifmap_h=ifmap_h, ifmap_w=ifmap_w, filter_h=filter_h,
                     filter_w=filter_w, channels=channels, num_filters=num_filters * groups,
                     stride=stride, groups=groups, **extra)


def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(str(path), "file", "not found") from None
    except IsADirectoryError:
        raise InputError(str(path), "file", "is a directory, expected a file") from None
    except PermissionError:
        raise InputError(str(path), "file", "permission denied") from None
    except UnicodeDecodeError as e:
        raise InputError(str(path), "file", f"not UTF-8 text ({e.reason})") from None


def read_layers_csv(path: str | os.PathLike[str]) -> list[ConvLayer]:
    """Read a SCALE-Sim topology CSV into layers (8-bit operands, no padding, batch 1).

    Format: one header row, then one row per layer: ``name, ifmap height, ifmap width,
    filter height, filter width, channels, num filters, stride`` (a trailing comma and
    further columns are ignored, whitespace is stripped, blank lines are skipped). Two
    optional further columns are read where the header names them: ``Input Density`` (the
    fraction of non-zero input activations, which data gating uses) and ``Weight Density``
    (of non-zero weights); a number in (0, 1] on every row, 1 (dense) without the column.
    A file with them is ours only: SCALE-Sim 3 reads a ninth column as an N:M sparsity ratio.

    Raises:
        InputError: file missing/unreadable, no layers, a missing or non-integer value,
            a value <= 0, a density outside (0, 1] or named twice, or a filter larger than
            the input (key ``row N: <column>``).
    """
    p = str(path)
    text = _read_text(path)
    rows = [
        (line, [cell.strip() for cell in cells])
        for line, cells in _numbered_rows(text)
        if any(cell.strip() for cell in cells)
    ]
    if not rows:
        raise InputError(p, "file", "empty; expected a header row and one row per layer")
    header_line, header = rows[0]
    if len(header) >= 8 and all(_parse_int(v) is not None for v in header[1:8]):
        raise InputError(
            p,
            f"row {header_line}",
            f"looks like a layer, not a header ({','.join(header[:8])}); "
            f"the first row must name the columns: {', '.join(CSV_COLUMNS)}",
        )
    names = [
        header[i] if i < len(header) and header[i] else CSV_COLUMNS[i]
        for i in range(len(CSV_COLUMNS))
    ]
    densities = _density_columns(p, header_line, header)
    layers: list[ConvLayer] = []
    for line, cells in rows[1:]:
        values: list[int] = []
        for i in range(1, 8):
            col = names[i]
            raw = cells[i] if i < len(cells) else ""
            if raw == "":
                raise InputError(p, f"row {line}: {col}", "missing value")
            v = _parse_int(raw)
            if v is None:
                raise InputError(p, f"row {line}: {col}", f"must be an integer, got {raw!r}")
            if v <= 0:
                raise InputError(p, f"row {line}: {col}", f"must be > 0, got {v}")
            values.append(v)
        name = cells[0]
        if not name:
            raise InputError(p, f"row {line}: {names[0]}", "missing value")
        ih, iw, fh, fw, ch, nf, stride = values
        if fh > ih:
            raise InputError(
                p, f"row {line}: {names[3]}", f"filter height {fh} exceeds ifmap height {ih}"
            )
        if fw > iw:
            raise InputError(
                p, f"row {line}: {names[4]}", f"filter width {fw} exceeds ifmap width {iw}"
            )
        extra: dict[str, float] = {}
        for i, fname in densities.items():
            raw = cells[i] if i < len(cells) else ""
            d = _parse_float(raw) if raw else None
            if d is None or not 0.0 < d <= 1.0:
                got = "missing value" if not raw else f"got {raw!r}"
                raise InputError(p, f"row {line}: {header[i]}",
                                 f"must be a number in (0, 1], {got}")
            extra[fname] = d
        layers.append(scalesim_layer(name, ih, iw, fh, fw, ch, nf, stride, **extra))
    if not layers:
        raise InputError(p, "file", "no layers after the header row")
    return layers


def _numbered_rows(text: str) -> list[tuple[int, list[str]]]:
    out = []
    reader = csv.reader(text.splitlines())
    for cells in reader:
        out.append((reader.line_num, cells))
    return out


def _parse_int(raw: str) -> int | None:
    try:
        return int(raw, 10)
    except ValueError:
        return None


def _parse_float(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


# --------------------------------------------------------------------------- accelerator YAML

# each field's default, whose type says how a YAML value is checked (an unset glb_kib is
# sized with the array: its type is float)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(AcceleratorSpec)} | {
    "glb_kib": AcceleratorSpec().glb_kib}
KNOWN_KEYS = tuple(_DEFAULTS)
_CHOICES = {
    **CHOICE_FIELDS,
    # the other templates' names are listed in the message; a file that names one never
    # gets here (it goes to _template_problems)
    "template": TEMPLATES,
}


def _dot_hint(v: Any) -> str:
    """For a number YAML read as text (``1e3``: no dot), how to write it; else ``""``."""
    if isinstance(v, str) and _parse_float(v) is not None:
        return f" (YAML reads {v} as text; write it with a dot, e.g. {float(v)!r})"
    return ""


def _check_value(key: str, v: Any) -> tuple[Any, str | None]:
    """Validate one YAML value against the spec field's default type; (value, problem)."""
    default = _DEFAULTS[key]
    got = f"got {v!r} ({type_name(v)})"
    if key in _CHOICES:
        if not isinstance(v, str) or v not in _CHOICES[key]:
            return v, f"must be one of {', '.join(_CHOICES[key])}, {got}"
        return v, None
    if isinstance(default, bool):
        if not isinstance(v, bool):
            return v, f"must be true or false, {got}"
        return v, None
    if isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            return v, f"must be an integer > 0, {got}"
        if v <= 0:
            return v, f"must be an integer > 0, got {v}"
        return v, None
    if key in NONNEG_FLOAT_FIELDS:  # 0 means unlimited
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v, f"must be a number >= 0 (0: unlimited), {got}{_dot_hint(v)}"
        if not math.isfinite(v) or v < 0:
            return v, f"must be a finite number >= 0 (0: unlimited), got {v}"
        return float(v), None
    if isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v, f"must be a number > 0, {got}{_dot_hint(v)}"
        if not math.isfinite(v) or v <= 0:
            return v, f"must be a finite number > 0, got {v}"
        return float(v), None
    return v, None  # pragma: no cover - every AcceleratorSpec field is handled above


def accelerator_yaml_problems(
    path: str | os.PathLike[str],
) -> tuple[AcceleratorSpec | GpuSpec | EyerissSpec | None, list[InputError]]:
    """Parse an accelerator YAML and collect every problem instead of stopping at the first.

    Returns ``(spec, [])`` for a valid file and ``(None, problems)`` otherwise (problems in
    file order). ``template: gpu`` gives a ``GpuSpec``, ``template: eyeriss`` an
    ``EyerissSpec``, anything else an ``AcceleratorSpec``.
    Never raises for a bad file.
    """
    p = str(path)
    try:
        text = _read_text(path)
    except InputError as e:
        return None, [e]
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        where = _mark(e)
        tag = (e.problem or "?").split("tag '")[-1].rstrip("'")
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        return None, [
            InputError(
                p,
                "file",
                f"unsupported YAML tag {tag!r}{where}; only plain mappings, numbers, strings "
                "and booleans are allowed (nothing in the file is executed)",
            )
        ]
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return None, [InputError(p, "file", f"malformed YAML{_mark(e)}: {problem}")]
    if not isinstance(data, dict):
        what = "empty file" if data is None else f"a {type_name(data)} ({data!r:.60})"
        return None, [
            InputError(
                p,
                "file",
                f"expected a mapping of accelerator keys ({', '.join(KNOWN_KEYS)}), got {what}",
            )
        ]
    if data.get("template") in _OTHER_TEMPLATES:
        return _template_problems(p, data, _OTHER_TEMPLATES[data["template"]])
    problems: list[InputError] = []
    values: dict[str, Any] = {}
    for key, v in data.items():
        if not isinstance(key, str) or key not in _DEFAULTS:
            hint = ""
            for name, other in _OTHER_TEMPLATES.items():
                if key in other.keys:
                    hint = f" ({key!r} is a {name} key: such a file starts with template: {name})"
                    break
            problems.append(
                InputError(
                    p, str(key), f"unknown key; known keys: {', '.join(KNOWN_KEYS)}{hint}"
                )
            )
            continue
        value, problem = _check_value(key, v)
        if problem:
            problems.append(InputError(p, key, problem))
        else:
            values[key] = value
    if problems:
        return None, problems
    spec = AcceleratorSpec(**values)
    rest = validate_accelerator(spec)  # a safety net; the checks above cover the same rules
    if rest:
        return None, [InputError(p, *line.split(": ", 1)) for line in rest]
    return spec, []


@dataclasses.dataclass(frozen=True)
class TemplateFields:
    """How to read the fields of one template's spec (a file, or a search space's keys)."""

    spec: type
    keys: tuple[str, ...]
    required: tuple[str, ...]  # keys the file must give (no silent defaults)
    check_field: Callable[[str, Any], tuple[Any, str | None]]

    @property
    def float_keys(self) -> frozenset[str]:
        """The fields typed ``float`` (or ``float | None``): those ``_dot_hint`` applies to."""
        return frozenset(f.name for f in dataclasses.fields(self.spec) if "float" in str(f.type))


_OTHER_TEMPLATES = {
    gpu.GPU_TEMPLATE: TemplateFields(GpuSpec, gpu.GPU_KEYS, gpu.GPU_REQUIRED_KEYS,
                                     gpu.check_field),
    eyeriss.EYERISS_TEMPLATE: TemplateFields(EyerissSpec, eyeriss.EYERISS_KEYS, (),
                                             eyeriss.check_field),
    fpga.FPGA_TEMPLATE: TemplateFields(fpga.FpgaSpec, fpga.FPGA_KEYS, fpga.FPGA_REQUIRED_KEYS,
                                       fpga.check_field),
}


# every template; the search space (search_spaces.joint) reads its keys with the same checks
TEMPLATE_FIELDS = {
    "systolic": TemplateFields(AcceleratorSpec, KNOWN_KEYS, (), _check_value),
    **_OTHER_TEMPLATES,
}


def _template_problems(
    p: str, data: dict[Any, Any], t: TemplateFields
) -> tuple[Any, list[InputError]]:
    """The ``template: gpu|eyeriss`` branch of ``accelerator_yaml_problems``: its own spec.

    A gpu file must give every hardware figure (``GPU_REQUIRED_KEYS``); an eyeriss file's
    absent keys take the Eyeriss chip's values. Same error style as the systolic keys.
    """
    name = data["template"]
    problems: list[InputError] = []
    values: dict[str, Any] = {}
    for key, v in data.items():
        if not isinstance(key, str) or key not in t.keys:
            problems.append(
                InputError(p, str(key), f"unknown key; known {name} keys: {', '.join(t.keys)}")
            )
            continue
        value, problem = t.check_field(key, v)
        if problem:
            hint = _dot_hint(v) if key in t.float_keys else ""  # not for an integer or a name
            problems.append(InputError(p, key, problem + hint))
        else:
            values[key] = value
    for key in t.required:
        if key not in data:
            problems.append(InputError(p, key, f"missing; required for template {name}"))
    if problems:
        return None, problems
    spec = t.spec(**values)
    rest = spec.validate()  # the cross-field rules (idle_w < tdp_w, ...)
    if rest:
        return None, [InputError(p, *line.split(": ", 1)) for line in rest]
    return spec, []


def _mark(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def load_accelerator_yaml(
    path: str | os.PathLike[str],
) -> AcceleratorSpec | GpuSpec | EyerissSpec:
    """Load an accelerator YAML (``yaml.safe_load``); absent keys take the spec defaults.

    The minimal file is ``{template: systolic, dataflow: ws, pe_rows: 32, pe_cols: 32}``.
    A file with ``template: gpu`` gives a ``GpuSpec`` and must state every hardware figure
    (``evaluators.hardware.gpu.GPU_REQUIRED_KEYS``); see docs/hardware/gpu.md. A file with
    ``template: eyeriss`` gives an ``EyerissSpec`` (absent keys: the Eyeriss chip's values);
    see docs/hardware/eyeriss.md.

    Raises:
        InputError: for the first problem (unknown key, wrong type, value out of range,
            malformed YAML, a Python/unsafe tag, a top level that is not a mapping, missing
            file); the message says how many more there are. Use
            ``accelerator_yaml_problems`` to get all of them.
    """
    spec, problems = accelerator_yaml_problems(path)
    if problems:
        first = problems[0]
        if len(problems) > 1:
            more = "; ".join(f"{e.key}: {e.message}" for e in problems[1:])
            raise InputError(
                first.path, first.key, f"{first.message} (and {len(problems) - 1} more: {more})"
            )
        raise first
    assert spec is not None
    return spec
