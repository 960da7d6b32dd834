"""Decoding connectionist temporal classification (Graves et al. 2006) and scoring it.

Shape legend: T frames, S symbols (the blank included, at index ``blank``).

A CTC model emits per frame a distribution over the symbols and a blank; a *path* (one symbol
per frame) reads as a string by merging repeats and then dropping blanks ("-aa--b" -> "ab").
The probability of a string is the sum over all its paths.

* :func:`greedy_decode`: the best path, collapsed (not always the best string);
* :func:`prefix_beam_search`: the CTC prefix beam search (Hannun et al. 2014, Graves 2012
  §7.5): per frame, each kept prefix carries two log-probabilities, of its paths ending in a
  blank and ending in its last symbol, so that "a" + "a" after a blank makes "aa" and without
  one stays "a"; ``beam`` prefixes survive each frame. Width 1 is greedy decoding.
* :func:`align`: the most probable path of a given string (Viterbi over CTC's expanded
  label sequence ``-a-b-``): which frame emits which symbol, for drawing.
* :func:`edit_distance`: Levenshtein distance, for the symbol error rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = [
    "align",
    "collapse",
    "edit_distance",
    "greedy_decode",
    "prefix_beam_search",
    "prefix_beam_steps",
]


def collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """A path (one symbol per frame) -> its string: repeats merged, then blanks dropped."""
    out, previous = [], None
    for s in path:
        if s != previous and s != blank:
            out.append(int(s))
        previous = s
    return out


def greedy_decode(log_probs: np.ndarray, blank: int = 0) -> list[int]:
    """(T, S) per-frame log-probabilities -> the string of the most probable path."""
    return collapse(np.asarray(log_probs).argmax(axis=-1).tolist(), blank)


Beams = dict[tuple[int, ...], tuple[float, float]]  # prefix -> (log p ending blank, non-blank)


def prefix_beam_steps(
    log_probs: np.ndarray, beam: int = 8, blank: int = 0
) -> Iterator[tuple[int, tuple[int, ...], float, Beams]]:
    """The prefix beam search one frame at a time: after frame t, yields ``(t, best prefix,
    its log-probability, the kept beams)``, the beams being the carried state (the step shape
    every rnnlab decoder shares: what is decided so far, its score, the state)."""
    if beam < 1:
        raise ValueError(f"prefix_beam_search expected beam >= 1, got {beam}")
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"prefix_beam_search expected log-probabilities (T, S), got {lp.shape}")
    beams: Beams = {(): (0.0, -np.inf)}
    for t, frame in enumerate(lp):  # (S,)
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_symbol) in beams.items():
            total = np.logaddexp(p_blank, p_symbol)
            _add(grown, prefix, 0, total + frame[blank])  # a blank: the prefix stays
            for s in range(len(frame)):
                if s == blank:
                    continue
                if prefix and s == prefix[-1]:
                    _add(grown, prefix, 1, p_symbol + frame[s])  # a repeat merges
                    _add(grown, (*prefix, s), 1, p_blank + frame[s])  # after a blank it is new
                else:
                    _add(grown, (*prefix, s), 1, total + frame[s])
        ranked = sorted(grown.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:beam]
        beams = {prefix: (v[0], v[1]) for prefix, v in ranked}
        best, value = ranked[0]
        yield t, best, float(np.logaddexp(*value)), beams


def prefix_beam_search(
    log_probs: np.ndarray, beam: int = 8, blank: int = 0
) -> list[tuple[list[int], float]]:
    """(T, S) per-frame log-probabilities -> up to ``beam`` strings with their log-probability
    (summed over the paths the search kept), best first: the last step of
    :func:`prefix_beam_steps`."""
    beams: Beams = {(): (0.0, -np.inf)}
    for step in prefix_beam_steps(log_probs, beam, blank):
        beams = step[3]
    out = [(list(p), float(np.logaddexp(*v))) for p, v in beams.items()]
    out = [(p, v) for p, v in out if v > -np.inf] or out[:1]  # impossible strings dropped
    return sorted(out, key=lambda pv: -pv[1])


def _add(table: dict, prefix: tuple[int, ...], which: int, value: float) -> None:
    """Add (in log space) ``value`` to ``table[prefix][which]`` (0: ends in blank, 1: not)."""
    entry = table.setdefault(prefix, [-np.inf, -np.inf])
    entry[which] = np.logaddexp(entry[which], value)


def align(log_probs: np.ndarray, string: Sequence[int], blank: int = 0) -> list[int]:
    """The most probable path (T symbols, blanks included) that reads as ``string``; an
    impossible string (longer than the frames allow) raises ValueError."""
    lp = np.asarray(log_probs, dtype=np.float64)
    T = len(lp)
    labels = [blank]
    for s in string:
        labels += [int(s), blank]  # -a-b-
    L = len(labels)
    score = np.full((T, L), -np.inf)
    back = np.zeros((T, L), dtype=np.int64)
    score[0, 0] = lp[0, blank]
    if L > 1:
        score[0, 1] = lp[0, labels[1]]
    for t in range(1, T):
        for k in range(L):
            options = [(score[t - 1, k], k)]
            if k >= 1:
                options.append((score[t - 1, k - 1], k - 1))
            if k >= 2 and labels[k] != blank and labels[k] != labels[k - 2]:
                options.append((score[t - 1, k - 2], k - 2))
            best, origin = max(options)
            score[t, k] = best + lp[t, labels[k]]
            back[t, k] = origin
    ends = [L - 1] + ([L - 2] if L > 1 else [])
    k = max(ends, key=lambda e: score[T - 1, e])
    if not np.isfinite(score[T - 1, k]):
        raise ValueError(f"align expected a string that {T} frames can emit, got {list(string)}")
    path = [0] * T
    for t in range(T - 1, -1, -1):
        path[t] = labels[k]
        k = int(back[t, k])
    return path


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b
    (any sequences of comparable items: symbol ids, phonemes, characters)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]
