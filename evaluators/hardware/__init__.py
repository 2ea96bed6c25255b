"""The analytical accelerator model: price a layer list on an ``AcceleratorSpec``.

Public API (all pure functions of their arguments except the two file readers)::

    evaluate_network(layers, acc) -> HardwareReport    per-layer costs, total, area, power
    evaluate_layer(layer, acc) -> LayerCost
    area_mm2(acc, *, weight_bits, input_bits) -> float
    validate_accelerator(acc) -> list[str]             "<field>: <rule>, got <value>" lines
    read_layers_csv(path) -> list[ConvLayer]           SCALE-Sim topology CSV
    load_accelerator_yaml(path) -> AcceleratorSpec     yaml.safe_load, defaults from the spec

Templates implement ``HardwareModel`` (lifecycle and invariants in its docstring);
``make_model(acc)`` picks the template named by ``acc.template``. For many layers on one
accelerator, build the model once with ``make_model`` and call its methods.
Formulas, units and sources: docs/hardware/systolic.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluators.hardware.io import (
    accelerator_yaml_problems,
    load_accelerator_yaml,
    read_layers_csv,
)
from evaluators.hardware.systolic import (
    HardwareModel,
    SystolicModel,
    Tiling,
    layer_problems,
    plan_tiling,
    validate_accelerator,
)
from evaluators.specs import AcceleratorSpec, ConvLayer, HardwareReport, LayerCost, SpecError

__all__ = [
    "HardwareModel",
    "SystolicModel",
    "Tiling",
    "accelerator_yaml_problems",
    "area_mm2",
    "evaluate_layer",
    "evaluate_network",
    "layer_problems",
    "load_accelerator_yaml",
    "make_model",
    "plan_tiling",
    "read_layers_csv",
    "validate_accelerator",
]

MODELS: dict[str, type[HardwareModel]] = {SystolicModel.template: SystolicModel}


def make_model(acc: AcceleratorSpec) -> HardwareModel:
    """The template model for ``acc`` (validated).

    Raises:
        SpecError: unknown template or any invalid field (all problems in one message).
    """
    cls = MODELS.get(acc.template)
    if cls is None:
        problems = validate_accelerator(acc) or [f"template: unknown, got {acc.template!r}"]
        raise SpecError("; ".join(problems))
    return cls(acc)


def evaluate_network(layers: Sequence[ConvLayer], acc: AcceleratorSpec) -> HardwareReport:
    """Price ``layers`` run one after another on ``acc``.

    Raises:
        SpecError: invalid accelerator, empty layer list or out-of-domain layer values.
        InfeasibleDesign: a layer cannot run (no tile fits the GLB, register file too small).
    """
    return make_model(acc).evaluate_network(layers)


def evaluate_layer(layer: ConvLayer, acc: AcceleratorSpec) -> LayerCost:
    """Price one layer on ``acc`` (raises like ``evaluate_network``)."""
    return make_model(acc).evaluate_layer(layer)


def area_mm2(acc: AcceleratorSpec, *, weight_bits: int, input_bits: int) -> float:
    """Area of ``acc`` in mm^2 with multipliers sized for the given operand widths.

    Raises:
        SpecError: invalid accelerator.
    """
    return make_model(acc).area_mm2(weight_bits=weight_bits, input_bits=input_bits)
