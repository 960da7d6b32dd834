"""Keras-style building blocks around the recurrent layers, for models written as a stack.

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from rnnlab.nn.cells import LSTMState
from rnnlab.nn.layers import RecurrentLayer

__all__ = ["Recurrent", "final_hidden"]


def final_hidden(state: Tensor | LSTMState, num_directions: int) -> Tensor:
    """The last layer's final hidden state, both directions concatenated: (B, D*H).

    For the forward direction this is the output at each sequence's last real step; for the
    backward direction, the output after reading the whole sequence back to its first step
    (what Keras's ``Bidirectional(LSTM(...))`` returns without ``return_sequences``).
    """
    h = state[0] if isinstance(state, tuple) else state  # (L*D, B, H): h comes first
    last = h[-num_directions:]  # (D, B, H)
    return last.transpose(0, 1).reshape(h.shape[1], -1)  # (B, D*H)


class Recurrent(nn.Module):
    """A recurrent layer that maps a tensor to a tensor, like a Keras RNN layer.

    ``return_sequences=True`` gives the whole output (B, T, D*H); ``False`` the final hidden state
    (B, D*H) (see :func:`final_hidden`), which respects ``lengths``. The wrapped layer's
    parameters are this module's (``layer.``-prefixed), so :func:`rnnlab.nn.summary` counts them
    under the layer's own type.
    """

    def __init__(self, layer: RecurrentLayer, return_sequences: bool = False) -> None:
        super().__init__()
        if not isinstance(layer, RecurrentLayer):
            raise TypeError(
                f"Recurrent expected an rnnlab RNN, LSTM or GRU layer, got {type(layer).__name__}"
            )
        self.layer = layer
        self.return_sequences = bool(return_sequences)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        padding: Literal["post", "pre"] = "post",
    ) -> Tensor:
        output, state = self.layer(x, lengths=lengths, padding=padding)  # (B, T, D*H)
        if self.return_sequences:
            return output
        return final_hidden(state, self.layer.num_directions)  # (B, D*H)

    def extra_repr(self) -> str:
        return f"return_sequences={self.return_sequences}"
