"""Classifiers built from rnnlab layers: sequences of feature vectors, and texts of word ids.

Shape legend: B batch, T time, I input features, E embedding size, H hidden units,
D directions, C classes.

Both models share :class:`RecurrentStack`: recurrent layers chained like a Keras stack with
``return_sequences=True``, a dropout after each layer, and a reduction over time of the last
layer's output. The layers come from the cell registry (:mod:`rnnlab.nn.registry`) and take
``model.backend`` and ``model.precision`` as their own. Initialisation follows Keras
(Glorot-uniform dense kernels, zero biases, embeddings uniform in [-0.05, 0.05]) so the
tutorial's models start where Keras starts them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnlab.config import ConfigError, ModelConfig
from rnnlab.nn.backends import Precision, compiled, native_bf16, variant_compiled
from rnnlab.nn.blocks import final_hidden
from rnnlab.nn.cells import LSTMCell
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.layers import RecurrentLayer
from rnnlab.nn.registry import LAYERS, layer_class
from rnnlab.nn.validation import make_mask
from rnnlab.nn.variants import VariantLSTMCell

__all__ = [
    "LAYERS",
    "RecurrentStack",
    "SequenceClassifier",
    "TextClassifier",
    "check_bf16",
    "layer_options",
    "model_precision",
]

Padding = Literal["pre", "post"]


def _keras_dense_init(linear: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def layer_options(cfg: ModelConfig) -> dict[str, Any]:
    """The keyword arguments every kind gives its ``cfg.cell`` layers beyond the sizes: for
    LSTM its forget bias, precision and variant options (LayerNorm, projection, peepholes,
    recurrent dropout, zoneout; :meth:`ModelConfig.variant_options`), for GRU its variant
    options (LayerNorm, recurrent dropout, zoneout), nothing for other cells. ModelConfig
    refuses the settings a cell lacks."""
    if cfg.cell != "lstm":
        return cfg.variant_options()
    return {
        "forget_bias": cfg.forget_bias,
        "precision": model_precision(cfg),
        **cfg.variant_options(),
    }


def folds_projection(linear: nn.Module | None, layer: nn.Module, dropout_between: bool) -> bool:
    """Whether ``layer`` should take ``linear`` (the Linear before it) as its
    ``input_projection`` (:mod:`rnnlab.nn.fold`): a float ``nn.Linear`` before an rnnlab layer
    (not their int8 copies), with no dropout active between them."""
    return (
        isinstance(linear, nn.Linear) and isinstance(layer, RecurrentLayer) and not dropout_between
    )


def _recurrent_layer(cfg: ModelConfig, input_size: int, hidden: int) -> RecurrentLayer:
    """One one-layer rnnlab layer of ``cfg.cell`` with the config's backend, precision and
    variant options."""
    return layer_class(cfg.cell)(
        input_size,
        hidden,
        bidirectional=cfg.bidirectional,
        backend=cfg.backend,
        **layer_options(cfg),
    )


class RecurrentStack(nn.Module):
    """Recurrent layers chained over time, each followed by dropout (the last one after the
    reduction over time).

    ``forward(x (B, T, I), lengths (B,) or None) -> (B, F)`` where F = D*H, or 2*D*H for
    ``"meanmax"``. With ``lengths``, padded steps (on side ``padding``) neither change the state
    nor enter the pooling; ``"last"`` is then each sequence's state at its own last real step.

    Why a chain of one-layer rnnlab layers rather than one layer's own ``num_layers``:
    ``model.hidden_sizes`` may give each layer its own width (``[64, 32]``), while a layer's
    state is one (L*D, B, H) tensor, as torch.nn.LSTM's, so its layers share H. The layers'
    routing is the same either way (one :func:`rnnlab.nn.backends.scan_layer` call per layer),
    so chaining costs no speed; it keeps the checkpoints' parameter names
    (``stack.layers.K.cells.D.*``) and the dropout draws of every run so far. This class only
    chains and pools: what runs each layer is the layer's (and the dispatcher's) business.
    """

    def __init__(self, cfg: ModelConfig, input_size: int, padding: Padding = "post") -> None:
        super().__init__()
        self.cell, self.pooling, self.padding = cfg.cell, cfg.pooling, padding
        D = 2 if cfg.bidirectional else 1
        layers, size = [], input_size
        for hidden in cfg.hidden_sizes:
            layers.append(_recurrent_layer(cfg, size, hidden))
            size = D * layers[-1].output_size  # D*H, or D*P with a projection
        self.layers = nn.ModuleList(layers)
        self.dropout = Dropout(cfg.dropout)
        self.num_directions = D
        self.output_size = size * (2 if cfg.pooling == "meanmax" else 1)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        return_gates: bool = False,
        input_projection: tuple[Tensor, Tensor | None] | None = None,
    ) -> Tensor | tuple[Tensor, list]:
        """``input_projection``: a Linear's (weight, bias) before the first layer, which that
        layer folds into its input weights (:mod:`rnnlab.nn.fold`); x is then the Linear's
        input."""
        traces, state = [], None
        for k, layer in enumerate(self.layers):
            options = {"input_projection": input_projection} if k == 0 and input_projection else {}
            if return_gates:  # the dispatcher records them with the reference loop, in float32
                x, state, trace = layer(
                    x, lengths=lengths, padding=self.padding, return_gates=True, **options
                )
                traces.append(trace)
            else:
                x, state = layer(x, lengths=lengths, padding=self.padding, **options)  # (B, T, D*H)
            if k < len(self.layers) - 1:
                x = self.dropout(x)
        pooled = self.dropout(self._pool(x, state, lengths))  # (B, F)
        return (pooled, traces) if return_gates else pooled

    def _pool(self, x: Tensor, state: Tensor | tuple, lengths: Tensor | None) -> Tensor:
        if self.pooling == "last":
            return final_hidden(state, self.num_directions)  # (B, D*H)
        B, T, _ = x.shape
        mask = make_mask("RecurrentStack", lengths, None, self.padding, B, T, x.device)
        if mask is None:  # every step is real
            mask = x.new_ones(B, T, dtype=torch.bool)
        mask = mask[:, :, None]  # (B, T, 1)
        # (B, 1) real steps per sequence
        count = x.new_full((B, 1), float(T)) if lengths is None else lengths[:, None].to(x.dtype)
        mean = (x * mask).sum(1) / count  # (B, D*H)
        if self.pooling == "mean":
            return mean
        peak = x.masked_fill(~mask, float("-inf")).amax(1)  # (B, D*H)
        return peak if self.pooling == "max" else torch.cat([mean, peak], dim=-1)


class SequenceClassifier(nn.Module):
    """(B, T, I) float sequences -> (B, C) logits: optional per-step Linear projection (the
    tutorial's ``X * W_in + b_in``, no activation) -> :class:`RecurrentStack` -> Linear head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_size = cfg.input_size
        size = cfg.input_size
        self.projection = None
        if cfg.projection:
            self.projection = _keras_dense_init(nn.Linear(cfg.input_size, cfg.projection))
            size = cfg.projection
        self.input_dropout = Dropout(cfg.input_dropout)
        self.stack = RecurrentStack(cfg, size, padding="post")
        self.head = _keras_dense_init(nn.Linear(self.stack.output_size, cfg.num_classes))

    def forward(self, x: Tensor, lengths: Tensor | None = None, return_gates: bool = False):
        """x (B, T, I), lengths (B,) real steps (post-padded) or None -> logits (B, C); with
        ``return_gates`` also every layer's gates (see :meth:`rnnlab.LSTM.forward`)."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"SequenceClassifier expected input of shape (B, T, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        between = self.input_dropout.p > 0 and self.training
        if folds_projection(self.projection, self.stack.layers[0], between):
            # the first layer folds the projection into its input weights (rnnlab.nn.fold)
            fold = (self.projection.weight, self.projection.bias)
            out = self.stack(x, lengths, return_gates=return_gates, input_projection=fold)
        else:
            if self.projection is not None:
                x = self.projection(x)  # (B, T, P)
            out = self.stack(self.input_dropout(x), lengths, return_gates=return_gates)
        if return_gates:
            return self.head(out[0]), out[1]
        return self.head(out)  # (B, C)


class TextClassifier(nn.Module):
    """(B, T) word ids -> (B, C) logits: Embedding -> :class:`RecurrentStack` -> Linear head.

    With ``mask=True`` the ``lengths`` passed to :meth:`forward` make the recurrent layers skip
    padding (on side ``padding``); with ``mask=False`` padding ids are read like any word, as a
    Keras ``Embedding`` without ``mask_zero`` does (the tutorial's model).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, padding: Padding = "pre") -> None:
        super().__init__()
        self.vocab_size, self.mask = vocab_size, cfg.mask
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim)  # (V, E)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)  # Keras's "uniform" initializer
        self.input_dropout = Dropout(cfg.input_dropout)
        self.stack = RecurrentStack(cfg, cfg.embedding_dim, padding=padding)
        self.head = _keras_dense_init(nn.Linear(self.stack.output_size, cfg.num_classes))

    def forward(self, ids: Tensor, lengths: Tensor | None = None, return_gates: bool = False):
        """ids (B, T) int64 in [0, vocab), lengths (B,) -> logits (B, C) (and gates if asked)."""
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"TextClassifier expected int64 ids of shape (B, T), got {ids.dtype} "
                f"of shape {tuple(ids.shape)}"
            )
        x = self.input_dropout(self.embedding(ids))  # (B, T, E)
        out = self.stack(x, lengths if self.mask else None, return_gates=return_gates)
        if return_gates:
            return self.head(out[0]), out[1]
        return self.head(out)  # (B, C)


def model_precision(cfg: ModelConfig) -> Precision:
    """``model.precision`` as the layers take it: ``"auto"`` is ``"bf16"`` for a model whose
    recurrent layers are all LSTMs on the compiled kernels (backend ``auto`` or ``compiled``,
    the extension built) on a CPU with native bf16 (:func:`rnnlab.nn.backends.native_bf16`),
    and ``"fp32"`` anywhere else, so a preset that says ``"auto"`` runs on any host."""
    if cfg.precision != "auto":
        return cfg.precision  # type: ignore[return-value]
    cells = {cfg.cell, cfg.decoder_cell} if cfg.kind == "seq2seq" else {cfg.cell}
    if cells != {"lstm"} or cfg.backend not in ("auto", "compiled") or not native_bf16():
        return "fp32"
    variant = cfg.variant_options()
    if variant:  # the compiled variant kernel's bf16 mode: even H and R, a working ukernel
        widths = [*cfg.hidden_sizes, *([cfg.proj_size] if cfg.proj_size else [])]
        if any(w % 2 for w in widths):
            return "fp32"
        probe = VariantLSTMCell(2, 2, layer_norm=True)
        why = variant_compiled.variant_unavailable(probe, probe.weight_hh, bf16=True)
        return "bf16" if why is None else "fp32"
    probe = LSTMCell(1, 1)
    return "bf16" if compiled.compiled_unavailable(probe, probe.weight_hh) is None else "fp32"


def check_bf16(model: nn.Module, cfg: ModelConfig) -> None:
    """With ``model.precision="bf16"``, check that the compiled kernels can run (building them
    on first use) and raise ConfigError naming why not: said when the model is built rather
    than at the first training step, where rnnlab.LSTM would raise it. Any model whose
    recurrent layers are rnnlab's (the classifiers, the language model)."""
    if model_precision(cfg) != "bf16":
        return
    for layer in (m for m in model.modules() if isinstance(m, RecurrentLayer)):
        cell = layer.cells[0]
        if isinstance(cell, VariantLSTMCell):
            reason = variant_compiled.variant_unavailable(cell, cell.weight_hh, bf16=True)
        else:
            reason = compiled.compiled_unavailable(cell, cell.weight_hh)
        if reason is not None:
            break
    else:
        return
    if reason is not None:
        raise ConfigError(
            f"model.precision='bf16' expected the compiled kernels to run here, got: "
            f"{reason}. Use model.precision=fp32."
        )
