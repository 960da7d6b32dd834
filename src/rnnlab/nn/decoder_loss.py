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
``cross_entropy(linear(hidden, weight, bias), targets)``, keeping only the probabilities
(N, V) for the backward instead of logits and log-probabilities.

The backward is not itself differentiable (no double backward).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["decoder_cross_entropy"]


class _DecoderCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, bf16: bool
    ) -> Tensor:
        dtype = torch.bfloat16 if bf16 else hidden.dtype
        h, w = hidden.to(dtype), weight.to(dtype)  # GEMM operands: (N, H), (V, H)
        logits = torch.mm(h, w.t()).to(hidden.dtype)  # (N, V), accumulated in fp32
        if bias is not None:
            logits += bias
        lse = torch.logsumexp(logits, dim=-1)  # (N,)
        loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).mean()
        probs = logits.sub_(lse[:, None]).exp_()  # (N, V) softmax, in the logits' memory
        ctx.save_for_backward(h, w, probs, targets)
        ctx.has_bias = bias is not None
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        h, w, probs, targets = ctx.saved_tensors
        N = probs.shape[0]
        grad = probs * (grad_loss / N)  # (N, V): (softmax - onehot) / N, times the loss's grad
        grad[torch.arange(N, device=grad.device), targets] -= grad_loss / N
        g = grad.to(h.dtype)  # the GEMM operand (bf16 in bf16 mode)
        grad_hidden = torch.mm(g, w).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_weight = torch.mm(g.t(), h).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
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
    return _DecoderCrossEntropy.apply(hidden, weight, bias, targets.long(), bool(bf16))
