"""Fake quantization (quantization-aware training) with straight-through estimators.

Weights: per-output-channel symmetric uniform quantization at ``bits`` in 2..16: levels
``k * s`` with ``k`` in ``-(2^(b-1)-1) .. 2^(b-1)-1`` and ``s = max|w| / (2^(b-1)-1)`` per output
channel, so at most ``2^b - 1`` distinct values per channel and 0 exactly representable (pruned
weights stay 0). ``bits == 1`` is BWN / XNOR-Net: ``sign(w) * mean|w|`` per channel, the mean
taken over the channel's non-zero weights (so a pruned weight stays 0). ``bits == 32`` is
floating point (no quantization). The backward pass is the straight-through estimator: the
gradient of the quantized weight is passed to the float weight unchanged.

Activations (after ReLU): PACT (Choi et al., 2018), unsigned uniform on ``[0, alpha]`` with
``2^b - 1`` steps and a learned clipping level ``alpha`` per layer. Gradients follow the paper:
``dq/dx = 1`` for ``x < alpha`` (0 above), ``dq/dalpha = 1`` where ``x >= alpha`` (0 below).

Custom :class:`torch.autograd.Function` objects are used (rather than ``x + (q - x).detach()``)
so that the forward values are exactly on the quantization grid. Quantization arithmetic is
done in float32 even under bf16 autocast.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from evaluators.training.workload import FLOAT_BITS, validate_bits

__all__ = ["PACT", "SignedQuant", "pact_quantize", "quantize_weight", "validate_bits"]



def _weight_grid(w: torch.Tensor, bits: int) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    if bits == 1:
        nonzero = (flat != 0).sum(dim=1).clamp(min=1)
        scale = (flat.abs().sum(dim=1) / nonzero).reshape(shape)
        return torch.sign(w) * scale
    qmax = 2 ** (bits - 1) - 1
    scale = (flat.abs().amax(dim=1) / qmax).clamp(min=torch.finfo(torch.float32).tiny)
    scale = scale.reshape(shape)
    return torch.round(w / scale).clamp(-qmax, qmax) * scale


class _WeightSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, bits: int) -> torch.Tensor:
        return _weight_grid(w.float(), bits).to(w.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Fake-quantize a weight tensor (dim 0 = output channel) to ``bits``; STE backward."""
    if bits >= FLOAT_BITS:
        return w
    return _WeightSTE.apply(w, bits)


class _PACTFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
        xf = x.float()
        a = alpha.float()
        ctx.save_for_backward(xf, a)
        levels = 2**bits - 1
        y = torch.minimum(xf.clamp(min=0), a)
        return torch.round(y * (levels / a)) * (a / levels)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, a = ctx.saved_tensors
        grad = grad.float()
        above = x >= a
        grad_x = torch.where(above | (x < 0), torch.zeros_like(grad), grad)
        grad_alpha = (grad * above).sum().reshape(a.shape)
        return grad_x, grad_alpha, None


def pact_quantize(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT fake quantization of ``x`` (>= 0) on ``[0, alpha]`` with ``2^bits`` levels."""
    if bits >= FLOAT_BITS:
        return x
    return _PACTFunction.apply(x, alpha, bits)


class PACT(nn.Module):
    """Activation fake-quantizer with a learned clipping level ``alpha`` (one per layer).

    ``alpha`` starts at ``init_alpha`` and is kept above ``min_alpha`` in the forward pass (it
    is trained by the optimizer, with weight decay as in the paper).
    """

    def __init__(self, bits: int, init_alpha: float = 3.0, min_alpha: float = 1e-3) -> None:
        super().__init__()
        self.bits = bits
        self.min_alpha = min_alpha
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pact_quantize(x, self.alpha.clamp(min=self.min_alpha), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class SignedQuant(nn.Module):
    """Symmetric per-tensor fake quantization of a signed activation (a residual block's output).

    The range is calibrated as an exponential moving average (momentum 0.1) of ``max|x|`` over
    training batches and frozen in eval mode, so a deployed network uses one static scale.
    Levels ``k * s``, ``k`` in ``-(2^(b-1)-1) .. 2^(b-1)-1``; 1 bit is treated as 2 (ternary),
    since a signed tensor needs a zero level. Straight-through estimator backward; identity at
    32 bits.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("range", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits >= FLOAT_BITS:
            return x
        if self.training:
            m = x.detach().abs().amax().float()
            self.range.copy_(torch.where(self.range > 0, 0.9 * self.range + 0.1 * m, m))
        qmax = 2 ** (max(self.bits, 2) - 1) - 1
        s = (self.range / qmax).clamp(min=torch.finfo(torch.float32).tiny)
        q = (torch.round(x.float() / s).clamp(-qmax, qmax) * s).to(x.dtype)
        return x + (q - x).detach()
