"""The ``gpu`` template: a per-layer roofline of a GPU, to compare an ASIC design with a GPU.

``GpuSpec`` holds a GPU's datasheet figures (peak throughput per precision, DRAM bandwidth,
L2, power, die) plus two achieved fractions (``efficiency``, ``bandwidth_efficiency``);
``GpuRooflineModel`` prices each layer as ``max(compute, DRAM) + kernel launch`` and charges
board power for that time. Formulas, units, assumptions and sources: ``docs/hardware/gpu.md``.
An example: ``experiments/accelerators/gpu_a100_like.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from evaluators.hardware.base import (
    HardwareModel,
    build_spec,
    check_layer,
    field_problems,
    is_real,
    layer_cost,
    required_fields,
    type_name,
)
from evaluators.specs import ConvLayer, LayerCost, SpecError

GPU_TEMPLATE = "gpu"

# The precisions the model can pick, the operand width each stores and computes at.
PRECISION_BITS = {"int4": 4, "int8": 8, "fp16": 16, "fp32": 32}


@dataclass(frozen=True, kw_only=True)
class GpuSpec:
    """A GPU priced as a roofline (template ``gpu``). Peaks are dense (no 2:4 sparsity).

    Attributes:
        peak_tops_int8: INT8 tensor-core peak, 1e12 ops/s (one MAC = 2 ops).
        peak_tflops_fp16: FP16/BF16 tensor-core peak, 1e12 FLOP/s.
        peak_tflops_fp32: FP32 (non-tensor) peak, 1e12 FLOP/s.
        dram_gbps: DRAM bandwidth, GB/s (1e9 bytes/s).
        efficiency: achieved fraction of the compute peak, in (0, 1].
        bandwidth_efficiency: achieved fraction of the DRAM bandwidth, in (0, 1].
        clock_mhz: the clock cycle counts are given at (boost clock), MHz.
        tdp_w: board power at full load, W.
        idle_w: board power while no kernel computes (a floor paid for the whole latency), W.
        dram_pj_per_bit: DRAM energy per bit read or written, pJ.
        die_mm2: die area, mm^2, at ``process_nm`` (never scaled to another node).
        process_nm: the die's process node, nm (reported, not used in any formula).
        kernel_launch_us: fixed time per layer (one kernel launch), microseconds, >= 0.
        peak_tops_int4: INT4 tensor-core peak, 1e12 ops/s; ``None``: no INT4 path (layers
            of <= 4 bits run at the INT8 rate).
        l2_mib: L2 cache, MiB; a layer whose input and output activations fit in it
            together moves only its weights through DRAM (0: never).
        name: a label.
        template: always ``gpu``.
    """

    peak_tops_int8: float
    peak_tflops_fp16: float
    peak_tflops_fp32: float
    dram_gbps: float
    efficiency: float
    bandwidth_efficiency: float
    clock_mhz: float
    tdp_w: float
    idle_w: float
    dram_pj_per_bit: float
    die_mm2: float
    process_nm: float
    kernel_launch_us: float
    peak_tops_int4: float | None = None
    l2_mib: float = 0.0
    name: str = "gpu"
    template: str = GPU_TEMPLATE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GpuSpec:
        """Build a spec from a mapping (values are checked by ``validate``).

        Raises:
            SpecError: unknown or missing keys.
        """
        return build_spec(cls, d, template=GPU_TEMPLATE, keys=GPU_KEYS,  # type: ignore[no-any-return]
                          required=GPU_REQUIRED_KEYS)

    def validate(self) -> list[str]:
        """Every problem of the spec, one line each: ``"<field>: <rule>, got <value>"``.

        An empty list means the spec is valid. Never raises.
        """
        problems = field_problems(self, check_field)
        if problems:  # the cross-field rules below need every field in its own range
            return problems
        dram_w = dram_power_w(self)
        if self.idle_w >= self.tdp_w:
            problems.append(f"idle_w: must be below tdp_w ({self.tdp_w:g}), got {self.idle_w}")
        elif self.idle_w + dram_w >= self.tdp_w:
            problems.append(
                f"tdp_w: must exceed idle_w + DRAM power at full bandwidth "
                f"({self.idle_w:g} + {dram_w:.4g} = {self.idle_w + dram_w:.4g} W), "
                f"got {self.tdp_w}"
            )
        return problems

    @property
    def ridge_ops_per_byte(self) -> float:
        """INT8 ridge point of the nominal roofline: peak / bandwidth, ops per DRAM byte."""
        return self.peak_tops_int8 * 1e12 / (self.dram_gbps * 1e9)


# --------------------------------------------------------------------------- field rules

_KIND = {
    **dict.fromkeys(
        (
            "peak_tops_int8",
            "peak_tflops_fp16",
            "peak_tflops_fp32",
            "dram_gbps",
            "clock_mhz",
            "tdp_w",
            "dram_pj_per_bit",
            "die_mm2",
            "process_nm",
        ),
        "positive",
    ),
    "peak_tops_int4": "optional",
    "efficiency": "fraction",
    "bandwidth_efficiency": "fraction",
    "idle_w": "non_negative",
    "kernel_launch_us": "non_negative",
    "l2_mib": "non_negative",
}
_RULES = {
    "positive": "must be a finite number > 0",
    "optional": "must be a finite number > 0 or null (no such path)",
    "fraction": "must be a number in (0, 1]",
    "non_negative": "must be a finite number >= 0",
}

GPU_KEYS = tuple(f.name for f in dataclasses.fields(GpuSpec))
# keys a gpu accelerator file must give (every hardware figure; no silent defaults)
GPU_REQUIRED_KEYS = required_fields(GpuSpec)


def check_field(name: str, v: Any) -> tuple[Any, str | None]:
    """Check one ``GpuSpec`` field value: ``(value, None)`` or ``(value, "<rule>, got ...")``.

    Numbers come back as ``float``. A value of the wrong type is reported with its type name
    (``got '400' (string)``). Unknown field names are a problem too. Never raises.
    """
    if name == "template":
        if v != GPU_TEMPLATE:
            return v, f"must be {GPU_TEMPLATE}, got {v!r}"
        return v, None
    if name == "name":
        if not isinstance(v, str) or not v.strip():
            return v, f"must be a non-empty string, got {v!r} ({type_name(v)})"
        return v, None
    kind = _KIND.get(name)
    if kind is None:
        return v, f"unknown field; known fields: {', '.join(GPU_KEYS)}"
    if kind == "optional" and v is None:
        return None, None
    rule = _RULES[kind]
    if not is_real(v):
        return v, f"{rule}, got {v!r} ({type_name(v)})"
    x = float(v)
    if kind == "fraction":
        bad = not 0.0 < x <= 1.0
    else:
        bad = not math.isfinite(x) or (x < 0 if kind == "non_negative" else x <= 0)
    if bad:
        return v, f"{rule}, got {v!r}"
    return x, None


def dram_power_w(spec: GpuSpec) -> float:
    """DRAM power at the full nominal bandwidth: ``dram_gbps * 1e9 * 8 * dram_pj_per_bit``."""
    return spec.dram_gbps * 1e9 * 8 * spec.dram_pj_per_bit * 1e-12


# --------------------------------------------------------------------------- the template


class GpuRooflineModel(HardwareModel):
    """A GPU as a per-layer roofline: ``max(compute, DRAM) + kernel launch``.

    Per layer: the precision is the narrowest tensor path that holds both the weight and the
    input bits (int4 if the spec has one, int8, fp16, else fp32); compute time is
    ``2 * MACs / (peak * efficiency)``; DRAM time is the bytes moved over ``dram_gbps *
    bandwidth_efficiency``; weights always come from DRAM, activations only when input plus
    output do not fit in L2 together. Energy: board power ``idle_w + (tdp_w - idle_w -
    P_dram) * u`` over the layer's latency (``u`` = achieved fraction of the compute peak)
    plus DRAM bits x ``dram_pj_per_bit``. Area: ``die_mm2``. See docs/hardware/gpu.md.

    Same lifecycle and invariants as ``HardwareModel`` (immutable, picklable, pure);
    ``evaluate_network`` is the base class's.
    """

    template = GPU_TEMPLATE
    spec_type = GpuSpec

    def __init__(self, acc: GpuSpec) -> None:
        super().__init__(acc)
        self._bytes_per_s = acc.dram_gbps * 1e9 * acc.bandwidth_efficiency
        self._p_dyn_w = acc.tdp_w - acc.idle_w - dram_power_w(acc)  # > 0 by validate()
        self._has_int4 = acc.peak_tops_int4 is not None
        self._widths = (4, 8, 16, 32) if self._has_int4 else (8, 16, 32)
        paths = [p for p in PRECISION_BITS if p != "int4" or self._has_int4]
        self._peak = {p: self.peak_ops_per_s(p) for p in paths}
        self._lanes = {p: self.mac_lanes(p) for p in paths}
        self._f_hz = acc.clock_mhz * 1e6
        self._l2_bytes = acc.l2_mib * 2.0**20
        self._launch_s = acc.kernel_launch_us * 1e-6

    def peak_ops_per_s(self, precision: str) -> float:
        """Nominal peak of a precision (``int4``, ``int8``, ``fp16``, ``fp32``), ops/s."""
        s = self.acc
        tera = {
            "int4": s.peak_tops_int4,
            "int8": s.peak_tops_int8,
            "fp16": s.peak_tflops_fp16,
            "fp32": s.peak_tflops_fp32,
        }[precision]
        if tera is None:
            raise SpecError(f"peak_tops_{precision}: this GPU has no {precision} path")
        return tera * 1e12

    def precision(self, layer: ConvLayer) -> str:
        """The path a layer runs on: the narrowest that holds its weight and input bits."""
        bits = max(layer.weight_bits, layer.input_bits)
        if bits <= 4 and self._has_int4:
            return "int4"
        if bits <= 8:
            return "int8"
        return "fp16" if bits <= 16 else "fp32"

    def storage_bits(self, bits: int) -> int:
        """The width a tensor of ``bits`` is stored at: 4 (with an int4 path), 8, 16 or 32."""
        return next((w for w in self._widths if bits <= w), 32)

    def mac_lanes(self, precision: str) -> int:
        """MACs per clock at a precision: ``ceil(peak / (2 * clock))`` (``LayerCost.num_pes``)."""
        return math.ceil(self.peak_ops_per_s(precision) / (2 * self.acc.clock_mhz * 1e6))

    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """The die area at its own node (``die_mm2``), whatever the operand widths."""
        return self.acc.die_mm2

    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        check_layer(layer)
        s = self.acc
        precision = self.precision(layer)
        p_bits = PRECISION_BITS[precision]
        out_bits = self.storage_bits(layer.output_bits)
        peak = self._peak[precision]
        ops = 2.0 * layer.macs

        # Bytes: weights dense at the compute width; activations as stored, whole tensors.
        weight_bytes = layer.weight_count * p_bits / 8.0
        input_bytes = layer.batch * layer.channels * layer.ifmap_h * layer.ifmap_w * p_bits / 8.0
        output_bytes = (
            layer.batch * layer.num_filters * layer.ofmap_h * layer.ofmap_w * out_bits / 8.0
        )
        on_chip = input_bytes + output_bytes <= self._l2_bytes
        dram_read = weight_bytes + (0.0 if on_chip else input_bytes)
        dram_write = 0.0 if on_chip else output_bytes
        dram_bytes = dram_read + dram_write

        compute_s = ops / (peak * s.efficiency)
        memory_s = dram_bytes / self._bytes_per_s
        latency_s = max(compute_s, memory_s) + self._launch_s

        # Energy: board power over the latency, DRAM bits separately (docs/hardware/gpu.md).
        u = ops / (peak * latency_s)  # achieved fraction of the compute peak
        core_w = s.idle_w + self._p_dyn_w * u
        dram_pj = 8.0 * dram_bytes * s.dram_pj_per_bit
        core_pj = core_w * latency_s * 1e12

        return layer_cost(
            layer,
            num_pes=self._lanes[precision],
            compute_cycles=max(1, math.ceil(compute_s * self._f_hz)),
            total_cycles=max(1, math.ceil(latency_s * self._f_hz)),
            dram_read_bytes=math.ceil(dram_read),
            dram_write_bytes=math.ceil(dram_write),
            mac_energy_pj=core_pj,
            rf_energy_pj=0.0,
            glb_energy_pj=0.0,
            dram_energy_pj=dram_pj,
            latency_ms=latency_s * 1e3,
            mapping={
                "template": self.template,
                "precision": precision,
                "weight_storage_bits": p_bits,
                "input_storage_bits": p_bits,
                "output_storage_bits": out_bits,
                "peak_ops_per_s": peak,
                "bound": "compute" if compute_s >= memory_s else "memory",
                "compute_time_us": compute_s * 1e6,
                "memory_time_us": memory_s * 1e6,
                "kernel_launch_us": s.kernel_launch_us,
                "arithmetic_intensity_ops_per_byte": ops / dram_bytes,
                "ridge_ops_per_byte": peak / (s.dram_gbps * 1e9),
                "ridge_achieved_ops_per_byte": peak * s.efficiency / self._bytes_per_s,
                "activations_in_l2": on_chip,
                "dram_weight_bytes": weight_bytes,
                "dram_input_bytes": 0.0 if on_chip else input_bytes,
                "dram_output_bytes": dram_write,
                "compute_fraction_of_peak": u,
                "board_power_w": core_w + dram_pj * 1e-12 / latency_s,
                "process_nm": s.process_nm,
            },
        )
