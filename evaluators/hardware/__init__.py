"""The analytical accelerator model: price a layer list on an ``AcceleratorSpec``.

Public API (all pure functions of their arguments except the two file readers)::

    evaluate_network(layers, acc) -> HardwareReport    per-layer costs, total, area, power
    evaluate_layer(layer, acc) -> LayerCost
    area_mm2(acc, *, weight_bits, input_bits) -> float
    validate_accelerator(acc) -> list[str]             "<field>: <rule>, got <value>" lines
    GpuSpec.validate() / EyerissSpec.validate()        the same for those specs
    read_layers_csv(path) -> list[ConvLayer]           SCALE-Sim topology CSV
    load_accelerator_yaml(path) -> AnySpec             yaml.safe_load

``acc`` (``AnySpec``) is an ``AcceleratorSpec`` (template ``systolic``), an ``EyerissSpec``
(template ``eyeriss``, row-stationary) or a ``GpuSpec`` (template ``gpu``, a roofline GPU
baseline). Templates implement ``HardwareModel`` (lifecycle and invariants in its docstring);
``make_model(acc)`` picks the template named by ``acc.template``. For many layers on one
accelerator, build the model once with ``make_model`` and call its methods.
Formulas, units and sources: docs/hardware/systolic.md, eyeriss.md, gpu.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluators.hardware.base import HardwareModel, build_spec, layer_problems
from evaluators.hardware.eyeriss import EyerissModel, EyerissSpec
from evaluators.hardware.fpga import FpgaModel, FpgaSpec
from evaluators.hardware.gpu import GpuRooflineModel, GpuSpec
from evaluators.hardware.io import (
    TEMPLATE_FIELDS,
    accelerator_yaml_problems,
    load_accelerator_yaml,
    read_layers_csv,
)
from evaluators.hardware.systolic import SystolicModel, Tiling, plan_tiling, validate_accelerator
from evaluators.specs import AcceleratorSpec, ConvLayer, HardwareReport, LayerCost, SpecError

__all__ = [
    "EyerissModel",
    "EyerissSpec",
    "FpgaModel",
    "FpgaSpec",
    "GpuRooflineModel",
    "GpuSpec",
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
    "spec_from_dict",
    "validate_accelerator",
]

AnySpec = AcceleratorSpec | GpuSpec | EyerissSpec | FpgaSpec

MODELS: dict[str, type[HardwareModel]] = {
    SystolicModel.template: SystolicModel,
    GpuRooflineModel.template: GpuRooflineModel,
    EyerissModel.template: EyerissModel,
    FpgaModel.template: FpgaModel,
}


def make_model(acc: AnySpec, *, enforce_budgets: bool = True) -> HardwareModel:
    """The template model for ``acc`` (validated): ``MODELS[acc.template]``.

    ``enforce_budgets=False``: an FPGA engine over its ``dsp_budget`` / ``bram_budget`` is
    priced anyway and its ``resources()`` say by how much (a search's constraints); with
    ``True`` the model's ``budget_problems()`` are raised. Other templates have no budgets.

    Raises:
        SpecError: unknown template, a template given the other template's spec type, any
            invalid field (all problems in one message), or (``enforce_budgets``) a resource
            budget exceeded.
    """
    cls = MODELS.get(acc.template)
    if cls is None:  # the spec type's own model rejects the template, with any other problem
        cls = next((m for m in MODELS.values() if isinstance(acc, m.spec_type)), SystolicModel)
    model = cls(acc)  # type: ignore[arg-type]
    if enforce_budgets and (problems := model.budget_problems()):
        raise SpecError("; ".join(problems))
    return model


def spec_from_dict(d: dict[str, Any]) -> AnySpec:
    """The spec of the template ``d["template"]`` names (absent: ``systolic``) from its
    ``to_dict()``; values are checked when a model is built, not here.

    Raises:
        SpecError: an unknown template, keys the template does not have, or a required key
            missing.
    """
    name = d.get("template", SystolicModel.template)
    t = TEMPLATE_FIELDS.get(name) if isinstance(name, str) else None
    if t is None:
        raise SpecError(f"template: must be one of {', '.join(TEMPLATE_FIELDS)}, got {name!r}")
    return build_spec(t.spec, d, template=name, keys=t.keys,  # type: ignore[no-any-return]
                      required=t.required)


def evaluate_network(
    layers: Sequence[ConvLayer], acc: AnySpec
) -> HardwareReport:
    """Price ``layers`` run one after another on ``acc``.

    Raises:
        SpecError: invalid accelerator, empty layer list or out-of-domain layer values.
        InfeasibleDesign: a layer cannot run (no tile fits the GLB, register file too small).
    """
    return make_model(acc).evaluate_network(layers)


def evaluate_layer(layer: ConvLayer, acc: AnySpec) -> LayerCost:
    """Price one layer on ``acc`` (raises like ``evaluate_network``)."""
    return make_model(acc).evaluate_layer(layer)


def area_mm2(acc: AnySpec, *, weight_bits: int, input_bits: int) -> float:
    """Area of ``acc`` in mm^2 with multipliers sized for the given operand widths (a GPU: its
    die, whatever the widths).

    Raises:
        SpecError: invalid accelerator.
    """
    return make_model(acc).area_mm2(weight_bits=weight_bits, input_bits=input_bits)
