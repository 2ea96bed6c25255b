"""The one training loop (every dataset, bitwidth and pruning ratio goes through :func:`train`).

Schedule of one run with a budget of ``T`` optimizer steps (``task.steps``, or ``task.epochs``
full passes over the training split, the last incomplete batch of each pass dropped):

1. ``torch.manual_seed(task.seed)``; build the model; a separate ``torch.Generator`` seeded
   with ``task.seed`` draws the batch order (and CIFAR augmentation), so runs are repeatable.
2. Steps ``0 .. T//2 - 1``: dense training (with weight/activation fake quantization).
   With warm start, tensors of the given state dict that match the model's by name and shape
   are loaded before step 0.
3. At step ``T//2``, first (only if ``rank_ratio < 1``) low-rank factorization: the layers
   ``rank_ratio`` selects are replaced by truncated-SVD / Tucker-2 factors of their trained
   weights (``model.factorize``) and the optimizer is rebuilt for them (the learning-rate
   schedule goes on where it was); then (only if ``prune_ratio > 0``) pruning, once, as
   ``prune_mode`` says (``model.apply_pruning``: ``torch.nn.utils.prune`` masks).
4. Steps ``T//2 .. T-1``: fine-tuning of the factors with the masks in place.
5. ``prune.remove``: the returned state dict holds plain weights with exact zeros.

Optimizer: SGD with Nesterov momentum 0.9 (lr ``task.lr``, L2 weight decay ``task.weight_decay``
on conv/linear weights and on the PACT clipping levels as in the PACT paper, none on BatchNorm
parameters), learning rate warmed up linearly over the first 5% of steps, then annealed to 0 on
a cosine. On ``digits`` a brief budget (80 steps) wants a high peak lr: 0.3 (the TaskSpec
default) gives about 95% validation accuracy for a 2-stage, width-16 net at 8 bits.
Loss: cross-entropy. On CUDA the forward pass runs under bf16 autocast (quantization arithmetic
stays float32); on CPU everything is float32 and deterministic for a fixed thread count.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.specs import (
    DEVICES,
    NetworkSpec,
    SpecError,
    TaskSpec,
    TrainingFailed,
    TrainingReport,
)
from evaluators.training.datasets import Splits, dataset_info, load_splits
from evaluators.training.model import (
    InputDensityProbe,
    apply_pruning,
    build_model,
    factorize,
    remove_pruning,
    validate_spec,
)

__all__ = ["evaluate_accuracy", "read_state_dict", "resolve_device", "train", "warm_start"]

_WARMUP_FRACTION = 0.05
_EVAL_BATCH = 1024
_SPLITS = ("train", "val", "test")


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA -> TrainingFailed.

    Raises:
        TrainingFailed: ``cuda`` requested but not available.
        SpecError: unknown device name.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise TrainingFailed(
                f"device 'cuda' was requested but CUDA is not available (torch "
                f"{torch.__version__}); use device 'auto' or 'cpu'")
        return torch.device("cuda")
    if requested == "cpu":
        return torch.device("cpu")
    raise SpecError(f"device must be one of {list(DEVICES)}, got {requested!r}")


def _validate(spec: NetworkSpec, task: TaskSpec) -> None:
    validate_spec(spec)
    problems: list[str] = []
    if (task.epochs is None) == (task.steps is None):
        problems.append(f"exactly one of epochs / steps must be set, got epochs={task.epochs}, "
                        f"steps={task.steps}")
    for name in ("epochs", "steps"):
        v = getattr(task, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            problems.append(f"{name} must be a positive int, got {v!r}")
    if not isinstance(task.batch_size, int) or task.batch_size < 1:
        problems.append(f"batch_size must be a positive int, got {task.batch_size!r}")
    if not isinstance(task.num_threads, int) or task.num_threads < 1:
        problems.append(f"num_threads must be a positive int, got {task.num_threads!r}")
    if not (task.lr > 0 and math.isfinite(task.lr)):
        problems.append(f"lr must be a positive finite number, got {task.lr!r}")
    if not (task.weight_decay >= 0 and math.isfinite(task.weight_decay)):
        problems.append(f"weight_decay must be >= 0, got {task.weight_decay!r}")
    if problems:
        raise SpecError("invalid task: " + "; ".join(problems))
    info = dataset_info(task.dataset)
    have = (spec.in_channels, spec.input_hw, spec.num_classes)
    if have != info:
        raise SpecError(
            f"network spec (in_channels, input_hw, num_classes) = {have} does not match "
            f"dataset {task.dataset!r} {info}")


@contextlib.contextmanager
def _threads(n: int):  # type: ignore[no-untyped-def]
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _make_optimizer(model: nn.Module, task: TaskSpec, total_steps: int, start_step: int = 0
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_bn = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
            (no_decay if is_bn or name == "bias" else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": task.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=task.lr, momentum=0.9, nesterov=True)
    warmup = max(1, round(_WARMUP_FRACTION * total_steps))

    def factor(local_step: int) -> float:
        step = local_step + start_step
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with ``pad`` zero padding + random horizontal flip, per sample."""
    b, _, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    n = torch.arange(b, device=x.device)[:, None, None]
    out = padded[n, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    if len(y) == 0:
        raise SpecError("cannot measure accuracy on an empty split")
    model.eval()
    correct = 0
    for i in range(0, len(y), _EVAL_BATCH):
        with _autocast(device):
            logits = model(x[i:i + _EVAL_BATCH].to(device))
        correct += int((logits.argmax(dim=1) == y[i:i + _EVAL_BATCH].to(device)).sum())
    return correct / len(y)


def _state_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def read_state_dict(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """``torch.save`` bytes -> a state dict, loaded with ``weights_only=True`` (nothing in it
    runs); a ``{"state_dict": ...}`` wrapper is unwrapped.

    Raises:
        SpecError: ``<what> is not a readable torch state dict (...)`` / ``is not a state dict``.
    """
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # malformed bytes, or a pickle that is not plain tensors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"{what} is not a readable torch state dict ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a common checkpoint wrapper
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise SpecError(f"{what} is not a state dict (a mapping of names to tensors)")
    return state


def warm_start(model: nn.Module, data: bytes) -> int:
    """Load the tensors of ``data`` (``torch.save`` bytes of a state dict) that match tensors
    of ``model`` by name and shape; the others keep their initialization.

    Returns:
        The number of tensors loaded.

    Raises:
        SpecError: ``data`` is not a state dict (loaded with ``weights_only=True``: no code in
            it can run).
    """
    source = read_state_dict(data, "warm-start weights")
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return len(matched)


def train(spec: NetworkSpec, task: TaskSpec, init_state: bytes | None = None
          ) -> TrainingReport:
    """Train ``spec`` on ``task`` briefly and score it on the validation split.

    A pure function of its arguments (it sets torch's global seed and, for the duration of
    the call, its thread count); safe to call in a Ray worker. See the module docstring for
    the schedule.

    Args:
        init_state: warm start: ``torch.save`` bytes of a state dict whose tensors that match
            the fresh model's by name and shape are loaded before training.

    Returns:
        The validation accuracy (eval mode), the mean training loss over the last epoch's worth
        of steps, the number of optimizer steps, the wall time of the call, the device, the
        trained CPU state dict as ``torch.save`` bytes (pruned weights exactly zero), and each
        workload layer's fraction of non-zero inputs on the validation split
        (:class:`~evaluators.training.model.InputDensityProbe`).

    Raises:
        TrainingFailed: the loss became NaN/inf, or CUDA was requested but is unavailable.
        SpecError: ``spec`` or ``task`` is out of domain, or they disagree on the dataset shape.
        DatasetError: the dataset is unknown or its files are missing/corrupt.
    """
    start = time.perf_counter()
    _validate(spec, task)
    device = resolve_device(task.device)
    with _threads(task.num_threads):
        splits = load_splits(task)
        torch.manual_seed(task.seed)
        model = build_model(spec, factorized=False)
        loaded = warm_start(model, init_state) if init_state else 0
        model.to(device)
        steps, loss = _run(model, spec, task, splits, device)
        with InputDensityProbe(model, spec) as probe:  # the same pass counts input zeros
            val_accuracy = _accuracy(model, splits.val_x, splits.val_y, device)
        state = _state_bytes(model)
    return TrainingReport(
        val_accuracy=val_accuracy,
        train_loss=loss,
        steps=steps,
        train_seconds=time.perf_counter() - start,
        device=str(device),
        state_dict=state,
        warm_started_tensors=loaded,
        input_density=probe.densities(),
    )


def _run(model: nn.Module, spec: NetworkSpec, task: TaskSpec, splits: Splits,
         device: torch.device) -> tuple[int, float]:
    gen = torch.Generator().manual_seed(task.seed)
    x, y = splits.train_x.to(device), splits.train_y.to(device)
    n = len(y)
    batch = min(task.batch_size, n)
    per_epoch = n // batch
    total = task.steps if task.steps is not None else task.epochs * per_epoch
    opt, sched = _make_optimizer(model, task, total)
    change_at = total // 2 if spec.prune_ratio > 0 or spec.rank_ratio < 1 else -1
    recent: deque[float] = deque(maxlen=per_epoch)
    step = 0
    model.train()
    while step < total:
        order = torch.randperm(n, generator=gen).to(device)
        for b in range(per_epoch):
            if step == change_at:
                if factorize(model, spec):  # new parameters: a new optimizer, same schedule
                    opt, sched = _make_optimizer(model, task, total, start_step=step)
                if spec.prune_ratio > 0:
                    apply_pruning(model, spec)
            idx = order[b * batch:(b + 1) * batch]
            xb, yb = x[idx], y[idx]
            if splits.augment:
                xb = _augment(xb, gen)
            with _autocast(device):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingFailed(f"loss became {value} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            recent.append(value)
            step += 1
            if step >= total:
                break
    remove_pruning(model)
    return step, sum(recent) / len(recent)


def evaluate_accuracy(spec: NetworkSpec, task: TaskSpec, state_dict: bytes,
                      split: str = "test") -> float:
    """Accuracy (eval mode) of trained weights on one split of ``task``'s dataset.

    Args:
        spec: the network the weights belong to.
        task: gives the dataset, split seed and fractions, device and thread count.
        state_dict: ``TrainingReport.state_dict`` (``torch.save`` bytes of a CPU state dict);
            loaded with ``weights_only=True``, so no code in it can run.
        split: ``train``, ``val`` or ``test``.

    Raises:
        SpecError: unknown split, or the weights do not fit ``spec``.
        DatasetError: the dataset is unknown or its files are missing/corrupt.
        TrainingFailed: CUDA requested but unavailable.
    """
    if split not in _SPLITS:
        raise SpecError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    _validate(spec, task)
    device = resolve_device(task.device)
    with _threads(task.num_threads):
        splits = load_splits(task)
        model = build_model(spec)
        weights = read_state_dict(state_dict, "state_dict")
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:  # a state dict of another network
            raise SpecError(f"state_dict does not fit the network spec: {e}") from None
        model.to(device)
        return _accuracy(model, getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y"),
                         device)

