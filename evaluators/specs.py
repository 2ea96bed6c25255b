"""Typed values that cross every boundary of codesign (the ground floor).

Everything here is a frozen dataclass built from plain Python values, picklable, and
convertible to and from a plain ``dict`` (``to_dict`` / ``from_dict``) so it can travel to a
Ray worker, be stored as an Optuna user attribute, and be exported to YAML/JSON.

Units are in the field names (``glb_kib``, ``dram_gbps``, ``freq_mhz``, ``latency_ms``...).
``evaluators`` imports neither ``codesign`` nor ``search_spaces``; these types are the only
thing ``search_spaces`` imports from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the template specs live with their models (which import this module)
    from evaluators.hardware import AnySpec

DATAFLOWS = ("ws", "os", "is")
DATAFLOW_CHOICES = (*DATAFLOWS, "auto")  # auto: the mapper picks one per layer
MAPPER_OBJECTIVES = ("edp", "energy", "latency")
PE_TYPES = ("fixed", "bit_fusion", "bit_serial")
SRAM_DEVICES = ("itrs-lop", "itrs-hp", "itrs-lstp")  # CACTI's ITRS device flavours
TEMPLATES = ("systolic", "eyeriss", "fpga", "gpu")  # evaluators.hardware.MODELS, one each
DRAM_TYPES = ("lpddr4", "lpddr", "ddr3", "gddr5", "hbm2", "hmc")
FAMILIES = ("plain_cnn", "resnet", "mobilenetv2")
PRUNE_MODES = ("unstructured", "structured", "nm")
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")
DEVICES = ("auto", "cpu", "cuda")
PRECISION_MODES = ("network", "stage")
WARM_STARTS = ("none", "closest", "checkpoint")


class EvaluatorError(Exception):
    """Base class of every error raised by ``evaluators``."""


class InputError(EvaluatorError, ValueError):
    """A user-supplied file (layers CSV, accelerator YAML, dataset file) is wrong.

    ``str(err)`` is ``"<path>: <key>: <message>"``, the form the CLI prints after ``error: ``.
    ``key`` is a dotted key path, a CSV column name with its row (``row 3: Channels``), or a
    dataset file name.
    """

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key, self.message = str(path), key, message
        super().__init__(f"{self.path}: {key}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # survives Ray's pickling
        return (type(self), (self.path, self.key, self.message))


class SpecError(EvaluatorError, ValueError):
    """A spec value is out of its domain (raised by ``validate`` methods)."""


class InfeasibleDesign(EvaluatorError):
    """The accelerator cannot run the workload at all (e.g. no tile fits its buffers)."""


class TrainingFailed(EvaluatorError):
    """Training diverged (NaN/inf loss) or could not run; the message says why."""


class DatasetError(EvaluatorError):
    """A dataset is unknown, or its files are missing or corrupt; the message names them."""


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able value that is stable across processes and runs."""
    text = json.dumps(_to_plain(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- network side


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``depth`` blocks of ``width`` output channels, ``kernel_size`` square kernels.

    The first block of the stage uses ``stride``; the others stride 1. Padding is
    ``kernel_size // 2`` ("same"). What a block is depends on the family (see
    ``evaluators.training.model``): conv-BN-ReLU (``plain_cnn``), a basic residual block
    (``resnet``), or an inverted residual with ``expansion`` x wider depthwise stage
    (``mobilenetv2``; ``expansion`` is 1 for the other families).

    ``weight_bits`` / ``activation_bits``: this stage's precision (mixed precision per stage);
    ``None`` means the network's ``weight_bits`` / ``activation_bits``.
    """

    depth: int
    width: int
    kernel_size: int
    stride: int
    expansion: int = 1
    weight_bits: int | None = None
    activation_bits: int | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """A complete, trainable network description (architecture + compression).

    Attributes:
        family: ``plain_cnn`` (stages of conv-BN-ReLU), ``resnet`` (3x3 stem + basic
            residual blocks) or ``mobilenetv2`` (3x3 stem + inverted residuals with depthwise
            convs); each ends in global average pooling and one linear classifier.
        in_channels, input_hw, num_classes: taken from the dataset (square inputs).
        stages: the stages, in order.
        weight_bits / activation_bits: bits of weights / of activations after each ReLU;
            32 means floating point (no fake quantization).
        prune_ratio: how much pruning removes (0 = dense), in the sense of ``prune_mode``.
        prune_mode: ``unstructured`` (L1-magnitude weights of every layer; the hardware sees
            weight density ``1 - ratio``), ``structured`` (L1-norm filter pruning of a block's
            internal channels; the hardware sees the physically smaller layers) or ``nm``
            (N:4 fine-grained sparsity, ``N = 4 - round(4 * ratio)``; 2:4 at ratio 0.5; the
            hardware sees density ``N / 4``).
        rank_ratio: low-rank factorization, the fraction of each layer's rank kept (1 = off).
            A k x k conv becomes a Tucker-2 chain 1x1 -> k x k core -> 1x1 with ranks
            ``round(ratio * in_channels)`` and ``round(ratio * out_channels)``; a 1x1 conv or
            the classifier becomes two SVD factors of rank ``round(ratio * min(in, out))``.
            A layer is factorized only where that stores fewer weights; depthwise convs never.
        first_layer_bits / last_layer_bits: weight bits of the first conv / of the classifier
            (``None``: the bits of their stage). The first layer reads the 8-bit image.
    """

    family: str
    in_channels: int
    input_hw: int
    num_classes: int
    stages: tuple[StageSpec, ...]
    weight_bits: int = 8
    activation_bits: int = 8
    prune_ratio: float = 0.0
    prune_mode: str = "unstructured"
    rank_ratio: float = 1.0
    first_layer_bits: int | None = None
    last_layer_bits: int | None = None

    def stage_bits(self, i: int) -> tuple[int, int]:
        """(weight bits, activation bits) of stage ``i``."""
        st = self.stages[i]
        return (self.weight_bits if st.weight_bits is None else st.weight_bits,
                self.activation_bits if st.activation_bits is None else st.activation_bits)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        d = dict(d)
        d["stages"] = tuple(StageSpec(**s) for s in d["stages"])
        return cls(**d)


@dataclass(frozen=True)
class TaskSpec:
    """How a network is trained and scored: data, budget, optimizer, device, seed.

    Exactly one of ``epochs`` / ``steps`` is set. ``device`` is ``auto`` (CUDA when present),
    ``cpu`` or ``cuda``. The train/validation/test split is drawn with ``split_seed`` so every
    trial of a study sees the same split; ``seed`` seeds initialization and batch order.

    ``deploy_input``: the square input resolution the network is deployed at, which sets the
    hardware workload's layer shapes (``None``: the training resolution). It does not change
    the trained weights (global pooling makes the classifier resolution-independent).

    ``warm_start``: ``none`` (fresh initialization), ``closest`` (initialize from the trained
    network of the study that shares the most weight elements by tensor name and shape) or
    ``checkpoint`` (from the state dict file ``warm_start_checkpoint``; tensors that match by
    name and shape are loaded, the rest keep their fresh initialization).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int | None = 5
    steps: int | None = None
    batch_size: int = 64
    lr: float = 0.3
    weight_decay: float = 5e-4
    device: str = "auto"
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    num_threads: int = 1
    deploy_input: int | None = None
    warm_start: str = "none"
    warm_start_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        return cls(**d)


# --------------------------------------------------------------------------- hardware side


@dataclass(frozen=True)
class AcceleratorSpec:
    """An accelerator instance of a template (only ``systolic`` so far).

    Attributes:
        template: ``systolic`` (TPU-like 2-D array, SCALE-Sim-compatible mapping).
        dataflow: ``ws`` (weight-), ``os`` (output-) or ``is`` (input-stationary).
        pe_rows, pe_cols: array sides in PEs.
        glb_kib: on-chip global buffer shared by inputs, weights and partial sums, KiB.
            Unset (``None``): SCALE-Sim's default SRAM (192 KiB), grown with the array
            beyond 32 x 32 PEs (3 MiB at 128 x 128; ``default_glb_kib``).
        glb_bytes_per_cycle: GLB bandwidth (reads + writes), bytes per cycle; 0: as much as
            the array needs (SCALE-Sim's assumption).
        rf_bytes: register file per PE, bytes (holds the stationary operand; two words of it
            allow the next fold's operand to load while the current one computes).
        dram_gbps: off-chip bandwidth, GB/s (1e9 bytes/s).
        freq_mhz: clock, MHz.
        dram_type: selects DRAM energy per bit (see ``evaluators.hardware.tables``).
        double_buffered: overlap the stationary-operand reload with compute when the register
            file holds two words.
        zero_gating: skip multiplier switching on zero weights (saves MAC energy only).
        weight_compression: store pruned weights in DRAM as bitmask + non-zeros.
        zero_skipping: compact zero weights out of the weight axis of the array (fewer
            cycles, MACs and RF accesses; weights carry a 1-bit-per-weight mask everywhere).
        pe_type: ``fixed`` (one MAC per PE per cycle, multiplier sized for the widest
            operands), ``bit_fusion`` (Bit Fusion: 2-bit bricks fuse into ``pe_bits`` x
            ``pe_bits`` PEs; narrower operands give more MACs per PE per cycle) or
            ``bit_serial`` (Stripes: ``pe_bits``-wide weights times one activation bit per
            cycle).
        pe_bits: the precision-scalable PE's full width (ignored by ``fixed``).
        mapper_objective: what ``dataflow: auto`` minimizes per layer: ``edp``, ``energy`` or
            ``latency`` (for a fixed dataflow the least-traffic tiling minimizes all three).
        tech_node_nm: technology node; energies, leakage and areas are scaled from 45 nm.
        sram_device: CACTI device flavour of the SRAMs (their leakage).
    """

    template: str = "systolic"
    dataflow: str = "ws"
    pe_rows: int = 32
    pe_cols: int = 32
    glb_kib: float = None  # type: ignore[assignment]  # None -> sized with the array
    glb_bytes_per_cycle: float = 0.0
    rf_bytes: int = 4
    dram_gbps: float = 16.0
    freq_mhz: float = 500.0
    dram_type: str = "lpddr4"
    double_buffered: bool = True
    zero_gating: bool = True
    weight_compression: bool = True
    zero_skipping: bool = False
    pe_type: str = "fixed"
    pe_bits: int = 8
    mapper_objective: str = "edp"
    tech_node_nm: float = 45.0
    sram_device: str = "itrs-lop"

    def __post_init__(self) -> None:
        if self.glb_kib is None:
            object.__setattr__(self, "glb_kib", default_glb_kib(self.pe_rows, self.pe_cols))

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AcceleratorSpec:
        return cls(**d)


# SCALE-Sim's default configuration (configs/scale.cfg of SCALE-Sim v2 and v3): a 32 x 32
# array with IfmapSramSzkB = FilterSramSzkB = OfmapSramSzkB = 64, i.e. 192 KiB of SRAM for
# 1,024 PEs. A systolic accelerator file that leaves glb_kib out gets that much, and as much
# per PE on a larger array, so a minimal file prices every layer SCALE-Sim's defaults price
# (the largest smallest tile is one fold of 32-bit partial sums, 4 B per PE, under os/is).
SCALESIM_SRAM_KIB = 3 * 64.0
SCALESIM_SRAM_KIB_PER_PE = SCALESIM_SRAM_KIB / (32 * 32)


def default_glb_kib(pe_rows: Any, pe_cols: Any) -> float:
    """The GLB of an accelerator that sets none: ``SCALESIM_SRAM_KIB``, or
    ``SCALESIM_SRAM_KIB_PER_PE`` per PE where that is more (an array of invalid sides gets
    the former; its sides are reported on their own)."""
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0
             for v in (pe_rows, pe_cols))
    pes = pe_rows * pe_cols if ok else 0
    return max(SCALESIM_SRAM_KIB, SCALESIM_SRAM_KIB_PER_PE * pes)


@dataclass(frozen=True)
class ConvLayer:
    """One layer of a hardware workload, in SCALE-Sim's topology terms plus extras.

    A fully connected layer is a conv with ``ifmap_h = ifmap_w = filter_h = filter_w = 1``.
    ``padding`` is added on each side (SCALE-Sim layers have 0). ``groups`` splits channels and
    filters into independent groups (``groups = channels = num_filters`` is a depthwise conv).
    ``weight_density`` is the fraction of non-zero weights (1 = dense); ``input_density`` the
    fraction of non-zero input activations (1 = dense; after a ReLU typically 0.2-0.6), which
    templates that gate on zero inputs use (``eyeriss``; ``systolic`` with ``zero_gating``).
    Bits are per operand.
    """

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    num_filters: int
    stride: int = 1
    padding: int = 0
    batch: int = 1
    weight_bits: int = 8
    input_bits: int = 8
    output_bits: int = 8
    weight_density: float = 1.0
    groups: int = 1
    input_density: float = 1.0

    @property
    def ofmap_h(self) -> int:
        return (self.ifmap_h + 2 * self.padding - self.filter_h) // self.stride + 1

    @property
    def ofmap_w(self) -> int:
        return (self.ifmap_w + 2 * self.padding - self.filter_w) // self.stride + 1

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates of the layer (batch included)."""
        return (
            self.batch
            * self.ofmap_h
            * self.ofmap_w
            * self.num_filters
            * (self.channels // self.groups)
            * self.filter_h
            * self.filter_w
        )

    @property
    def weight_count(self) -> int:
        return self.filter_h * self.filter_w * (self.channels // self.groups) * self.num_filters

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer on one accelerator. Costs add up: ``a + b`` is a network cost.

    Cycle counts are at the accelerator clock. Energies are in pJ. ``mapping`` describes the
    chosen spatial/temporal mapping (free-form, JSON-able) and is dropped when costs are added.
    """

    name: str
    macs: int
    compute_cycles: int
    total_cycles: int
    utilization: float  # MACs / (PEs x total_cycles)
    mapping_utilization: float  # MACs / (PEs x compute_cycles), the ceil/fold loss alone
    dram_read_bytes: int
    dram_write_bytes: int
    mac_energy_pj: float
    rf_energy_pj: float
    glb_energy_pj: float
    dram_energy_pj: float
    latency_ms: float
    num_pes: int
    leakage_energy_pj: float = 0.0  # static power x latency
    clock_energy_pj: float = 0.0  # register bits clocked every cycle x total cycles
    mapping: dict[str, Any] = field(default_factory=dict)

    @property
    def energy_pj(self) -> float:
        return (
            self.mac_energy_pj
            + self.rf_energy_pj
            + self.glb_energy_pj
            + self.dram_energy_pj
            + self.leakage_energy_pj
            + self.clock_energy_pj
        )

    def __add__(self, other: LayerCost) -> LayerCost:
        total = self.total_cycles + other.total_cycles
        compute = self.compute_cycles + other.compute_cycles
        macs = self.macs + other.macs
        pes = max(self.num_pes, other.num_pes)
        return LayerCost(
            name="total",
            macs=macs,
            compute_cycles=compute,
            total_cycles=total,
            utilization=macs / (pes * total) if total else 0.0,
            mapping_utilization=macs / (pes * compute) if compute else 0.0,
            dram_read_bytes=self.dram_read_bytes + other.dram_read_bytes,
            dram_write_bytes=self.dram_write_bytes + other.dram_write_bytes,
            mac_energy_pj=self.mac_energy_pj + other.mac_energy_pj,
            rf_energy_pj=self.rf_energy_pj + other.rf_energy_pj,
            glb_energy_pj=self.glb_energy_pj + other.glb_energy_pj,
            dram_energy_pj=self.dram_energy_pj + other.dram_energy_pj,
            latency_ms=self.latency_ms + other.latency_ms,
            num_pes=pes,
            leakage_energy_pj=self.leakage_energy_pj + other.leakage_energy_pj,
            clock_energy_pj=self.clock_energy_pj + other.clock_energy_pj,
        )

    def to_dict(self) -> dict[str, Any]:
        d = _to_plain(self)
        d["energy_pj"] = self.energy_pj
        return d


def resource_constraints(resources: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``used / budget - 1`` of every budgeted resource of a ``HardwareModel.resources()``
    dict (<= 0: fits); resources without a budget are left out."""
    return {name: r["constraint"] for name, r in resources.items()
            if r.get("constraint") is not None}


@dataclass(frozen=True)
class HardwareReport:
    """A network priced on an accelerator: per-layer costs, their total, area and power.

    ``power_w`` is the average power over one inference (energy / latency). ``resources``
    is a programmable device's resource use (``HardwareModel.resources()``: per resource
    ``used``, ``available``, ``fraction`` and, for the budgeted ones, ``constraint``), ``None``
    for a chip whose size is its ``area_mm2``.
    """

    layers: tuple[LayerCost, ...]
    total: LayerCost
    area_mm2: float
    power_w: float
    resources: dict[str, dict[str, Any]] | None = None

    @property
    def latency_ms(self) -> float:
        return self.total.latency_ms

    @property
    def energy_mj(self) -> float:
        return self.total.energy_pj * 1e-9

    def metrics(self) -> dict[str, float]:
        """The network-level figures objectives and budgets are named after."""
        return {"latency_ms": self.latency_ms, "energy_mj": self.energy_mj,
                "area_mm2": self.area_mm2, "power_w": self.power_w}

    def resource_constraints(self) -> dict[str, float]:
        """``used / budget - 1`` of every budgeted resource (<= 0: fits); empty for a chip."""
        return resource_constraints(self.resources or {})

    def to_dict(self) -> dict[str, Any]:
        """``layers``, ``total`` (with the network-level figures) and, for a programmable
        device, ``resources``."""
        out: dict[str, Any] = {
            "layers": [c.to_dict() for c in self.layers],
            "total": {
                **self.total.to_dict(),
                "energy_mj": self.energy_mj,
                "area_mm2": self.area_mm2,
                "power_w": self.power_w,
            },
        }
        if self.resources is not None:
            out["resources"] = self.resources
        return out


# --------------------------------------------------------------------------- one design


@dataclass(frozen=True)
class Budgets:
    """Upper bounds a design must meet to be feasible (``None`` = unconstrained)."""

    area_mm2: float | None = None
    power_w: float | None = None
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# fields added after the first release, with the default that keeps the earlier behaviour
_NETWORK_ADDED = {"rank_ratio": 1.0, "first_layer_bits": None, "last_layer_bits": None}
_STAGE_ADDED = {"weight_bits": None, "activation_bits": None}
_TASK_ADDED = {"deploy_input": None, "warm_start": "none", "warm_start_checkpoint": None}


def _drop_defaults(d: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in added and v == added[k])}


@dataclass(frozen=True)
class DesignPoint:
    """One point of the joint space: a network (with its compression) and an accelerator."""

    network: NetworkSpec
    accelerator: AnySpec  # AcceleratorSpec (systolic), EyerissSpec, FpgaSpec or GpuSpec

    def training_key(self, task: TaskSpec) -> str:
        """Stable key of everything that determines the trained weights (not the hardware).

        Fields added to the specs after their first release are left out while they hold
        their default (the behaviour from before they existed), so a study made by an older
        codesign keeps its cache keys.
        """
        t = _drop_defaults(task.to_dict(), _TASK_ADDED)
        t.pop("num_threads")  # does not change results
        t.pop("device")
        t.pop("deploy_input", None)  # sets the hardware workload, not the weights
        return stable_hash({"network": self._network_key(), "task": t})

    def design_key(self) -> str:
        """Stable key of the whole design (network and accelerator): two trials with equal
        keys evaluate the same design. Fields added later are left out at their defaults,
        as in :meth:`training_key`."""
        return stable_hash({"network": self._network_key(),
                            "accelerator": self.accelerator.to_dict()})

    def _network_key(self) -> dict[str, Any]:
        net = _drop_defaults(self.network.to_dict(), _NETWORK_ADDED)
        net["stages"] = [_drop_defaults(s, _STAGE_ADDED) for s in net["stages"]]
        return net

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network.to_dict(), "accelerator": self.accelerator.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DesignPoint:
        from evaluators.hardware import spec_from_dict  # the template registry lives there

        return cls(
            network=NetworkSpec.from_dict(d["network"]),
            accelerator=spec_from_dict(d["accelerator"]),
        )


@dataclass(frozen=True)
class TrainingReport:
    """Outcome of one brief training run.

    ``state_dict`` is the trained model's ``torch.save`` bytes (CPU tensors), so a worker never
    writes outside its own process; the driver decides where weights are stored.
    ``input_density``: workload layer name -> fraction of non-zero input values, measured on
    the validation split (``ConvLayer.input_density``; empty if not measured).
    """

    val_accuracy: float
    train_loss: float
    steps: int
    train_seconds: float
    device: str
    state_dict: bytes = b""
    warm_started_tensors: int = 0
    input_density: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """What a worker returns for one design: hardware first, training only when feasible.

    ``constraints`` maps a budget name to ``(value - budget) / budget`` (feasible iff all <= 0).
    ``accuracy`` is the validation accuracy, or ``cached_accuracy`` given by the driver on a
    cache hit, or 0.0 (pessimistic) when the design is infeasible and was not trained.
    """

    hardware: HardwareReport
    constraints: dict[str, float]
    feasible: bool
    accuracy: float
    training_key: str
    training: TrainingReport | None = None
    cached: bool = False
    infeasible_reason: str | None = None
    hw_seconds: float = 0.0
