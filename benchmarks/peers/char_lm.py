"""Peer (b): a char-rnn recipe (Karpathy 2015) on torch.nn.LSTM.

2 x 512 LSTM over a 64-wide character embedding, batch 64, bptt 128, Adam at 2e-3, gradient
norm clipped at 5, no dropout by default, state carried between windows (detached) and reset
each epoch. Written from the recipe, not copied. Example::

    python benchmarks/peers/char_lm.py --sample --time-limit 60 --out /tmp/char_peer.json
"""

from __future__ import annotations

import torch
from peer_common import Recipe, parser, run


def main() -> None:
    args = parser(
        __doc__.splitlines()[0],
        emsize=64,
        nhid=512,
        nlayers=2,
        dropout=0.0,
        lr=2e-3,
        clip=5.0,
        bptt=128,
        batch_size=64,
        max_vocab=0,
    ).parse_args()
    recipe = Recipe(
        name="peer char-rnn (torch.nn.LSTM)",
        level="char",
        make_optimizer=lambda model, a: torch.optim.Adam(model.parameters(), lr=a.lr),
    )
    run(recipe, args)


if __name__ == "__main__":
    main()
