"""A language model's decoder and softmax cross-entropy in one autograd Function.

Shape legend: N positions (batch x time), H hidden units, V vocabulary size.

For a word-level model the decoder ``logits = h W^T + b`` and the loss over V classes are about
half of a training step's FLOPs (V = 10,000, H = 650 in Zaremba et al. 2014's medium model). This
module computes, for (N, H) ``hidden``, (V, H) ``weight``, (V,) ``bias`` and (N,) ``targets``::

    logits = hidden @ weight.T + bias                        (N, V)
    loss   = mean_n( logsumexp(logits[n]) - logits[n, targets[n]] )

and its gradients, with the three GEMMs (forward, d hidden = G W, d weight = G^T hidden, where
``G = (softmax(logits) - onehot(targets)) / N``) written out, so that in bf16 mode they run on
bf16 operands with fp32 accumulation (oneDNN, avx512_bf16 / AMX) while the softmax, the loss,
the bias and every returned gradient stay float32, like the LSTM's bf16 mode
(:func:`rnnlab.nn.backends.compiled.use_bf16`). In float32 it is the same computation as
``cross_entropy(linear(hidden, weight, bias), targets)``. The forward leaves in the logits'
memory the gradient itself, ``(softmax - onehot) / N``, and the bias gradient (its column
sums); the backward only scales them by the loss's gradient and runs the two GEMMs. Where the
compiled extension runs, that softmax is one C++ kernel (``backends/_ext/decoder.cpp``: two
passes over each row instead of ATen's six or so); elsewhere the same computation runs as
torch ops.

Where no gradient is wanted (evaluation: no grad mode, or nothing requiring grad), the same
logits go to torch's ``cross_entropy`` instead, which does not make the gradient.

The backward is not itself differentiable (no double backward).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.nn.backends import _ext

__all__ = ["decoder_cross_entropy"]


def _softmax_kernel():
    """The compiled in-place softmax cross-entropy (``_ext/decoder.cpp``), or None where the
    extension cannot run (then the same computation runs as torch ops)."""
    module = _ext.load()
    return getattr(module, "softmax_xent_", None) if module is not None else None


def _softmax_xent_(logits: Tensor, targets: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Overwrites float32 ``logits`` (N, V) with ``scale * (softmax - onehot(targets))``; returns
    the summed loss (a scalar) and the column sums of the new contents (V,) (the bias
    gradient)."""
    kernel = _softmax_kernel() if logits.dtype == torch.float32 else None
    if kernel is not None:
        loss_sum, bias_grad = kernel(logits, targets, scale)
        return loss_sum.to(logits.dtype), bias_grad
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    loss_sum = (lse - logits.gather(1, targets[:, None]).squeeze(1)).sum()
    grad = logits.sub_(lse[:, None]).exp_().mul_(scale)  # (N, V), in the logits' memory
    grad[torch.arange(grad.shape[0], device=grad.device), targets] -= scale
    return loss_sum, grad.sum(0)


def _logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, bf16: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, w, logits)``: the GEMM operands (N, H) and (V, H) (bf16 in bf16 mode) and the
    float logits (N, V), accumulated in fp32."""
    dtype = torch.bfloat16 if bf16 else hidden.dtype
    h, w = hidden.to(dtype), weight.to(dtype)
    if bias is not None and not bf16:
        return h, w, torch.addmm(bias, h, w.t())  # the bias added by the GEMM
    logits = torch.mm(h, w.t()).to(hidden.dtype)
    if bias is not None:
        logits += bias
    return h, w, logits


class _DecoderCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, bf16: bool
    ) -> Tensor:
        N = hidden.shape[0]
        h, w, logits = _logits(hidden, weight, bias, bf16)
        # The gradient for a loss gradient of 1, in the logits' memory; backward scales it.
        loss_sum, bias_grad = _softmax_xent_(logits, targets, 1.0 / N)
        ctx.save_for_backward(h, w, logits)
        ctx.bias_grad = bias_grad if bias is not None else None
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss_sum / N

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        h, w, grad = ctx.saved_tensors  # grad: (softmax - onehot) / N
        g = grad.to(h.dtype)  # the GEMM operand (bf16 in bf16 mode)
        one = bool(grad_loss == 1.0)  # the usual case: nothing to scale

        def scaled(t: Tensor) -> Tensor:
            return t if one else t.mul_(grad_loss)

        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = scaled(torch.mm(g, w).to(ctx.dtypes[0]))
        if ctx.needs_input_grad[1]:
            grad_weight = scaled(torch.mm(g.t(), h).to(ctx.dtypes[1]))
        if ctx.bias_grad is not None and ctx.needs_input_grad[2]:
            grad_bias = scaled(ctx.bias_grad)
        return grad_hidden, grad_weight, grad_bias, None, None


def decoder_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    bf16: bool = False,
) -> Tensor:
    """Mean cross-entropy (nats) of ``targets`` under ``softmax(hidden @ weight.T + bias)``.

    Args:
        hidden: (N, H) floating point (the last recurrent layer's outputs, flattened).
        weight: (V, H) decoder weight (the embedding matrix when tied).
        bias: (V,) or None.
        targets: (N,) integer ids in [0, V).
        bf16: run the three GEMMs on bf16 operands with fp32 accumulation (see the module
            docstring); float32 inputs and gradients either way.

    Returns:
        A scalar: the same value and gradients as
        ``nn.functional.cross_entropy(nn.functional.linear(hidden, weight, bias), targets)``
        (within float32 rounding; within bf16 rounding with ``bf16=True``).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            "decoder_cross_entropy expected hidden (N, H) and weight (V, H), got "
            f"{tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if targets.shape != (hidden.shape[0],) or targets.dtype.is_floating_point:
        raise ValueError(
            f"decoder_cross_entropy expected integer targets of shape ({hidden.shape[0]},), got "
            f"{targets.dtype} {tuple(targets.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"decoder_cross_entropy expected bias of shape ({weight.shape[0]},), got "
            f"{tuple(bias.shape)}"
        )
    wanted = [t for t in (hidden, weight, bias) if t is not None and t.requires_grad]
    if not (torch.is_grad_enabled() and wanted):  # evaluation: the loss alone
        return _loss_only(hidden, weight, bias, targets.long(), bool(bf16))
    return _DecoderCrossEntropy.apply(hidden, weight, bias, targets.long(), bool(bf16))


def _loss_only(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, bf16: bool
) -> Tensor:
    """The same loss where no gradient is wanted: the same logits, then torch's
    ``cross_entropy`` (log-softmax and the targets' entries), which skips the gradient and the
    bias sums that the Function's forward leaves for its backward. On G's decoder (N 700,
    H 650, V 10,000, one thread) the loss after the GEMM took 9.5 ms this way against 16 ms."""
    _, _, logits = _logits(hidden, weight, bias, bf16)
    return torch.nn.functional.cross_entropy(logits, targets)
