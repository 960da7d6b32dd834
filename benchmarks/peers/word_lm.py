"""Peer (a): the recipe of PyTorch's word_language_model example, on torch.nn.LSTM.

2 x 200 LSTM, embedding 200, untied, dropout 0.2, bptt 35, batch 20, plain SGD from lr 20,
divided by 4 whenever the validation loss does not improve on the best so far, gradient norm
clipped at 0.25, state carried between windows (detached) and reset each epoch. Written from the
recipe, not copied. Example::

    python benchmarks/peers/word_lm.py --sample --time-limit 60 --out /tmp/word_peer.json
"""

from __future__ import annotations

import torch
from peer_common import Recipe, parser, run


def anneal_on_plateau(optimizer: torch.optim.Optimizer, loss: float, losses: list[float]) -> None:
    """lr /= 4 when ``loss`` is no better than every earlier validation loss."""
    if len(losses) > 1 and loss >= min(losses[:-1]):
        for group in optimizer.param_groups:
            group["lr"] /= 4.0


def main() -> None:
    args = parser(
        __doc__.splitlines()[0],
        emsize=200,
        nhid=200,
        nlayers=2,
        dropout=0.2,
        lr=20.0,
        clip=0.25,
        bptt=35,
        batch_size=20,
        max_vocab=10000,
    ).parse_args()
    recipe = Recipe(
        name="peer word_language_model (torch.nn.LSTM)",
        level="word",
        make_optimizer=lambda model, a: torch.optim.SGD(model.parameters(), lr=a.lr),
        on_validation=anneal_on_plateau,
    )
    run(recipe, args)


if __name__ == "__main__":
    main()
