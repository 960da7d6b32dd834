"""The figures of sequence to sequence, as sums that add over batches and processes.

* token error rate (PER for phonemes, CER for characters): the Levenshtein distance of each
  hypothesis to its closest reference, summed, over the summed lengths of those references;
* sequence error rate (WER for grapheme-to-phoneme: a word is wrong unless its hypothesis equals
  one of its references, as Yao & Zweig 2015 and Rao et al. 2015 score CMUdict);
* BLEU and chrF (word-level targets) through sacrebleu: their sufficient statistics per
  sentence (n-gram matches and totals, lengths) are sums, so a corpus score comes from the
  summed statistics exactly as ``corpus_score`` computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rnnlab.nn.ctc import edit_distance  # the one Levenshtein distance (CTC's SER uses it too)

__all__ = ["closest", "edit_distance", "sequence_sums", "text_stat_sums", "text_scores"]


def closest(hypothesis: Sequence, references: Sequence[Sequence]) -> tuple[int, int]:
    """``(edits, reference length)`` of the reference closest to ``hypothesis`` (fewest edits
    per reference token, then the shorter)."""
    best = min(
        ((edit_distance(hypothesis, r), len(r)) for r in references),
        key=lambda e: (e[0] / max(e[1], 1), e[1]),
    )
    return best


def sequence_sums(
    hypotheses: Sequence[Sequence], references: Sequence[Sequence[Sequence]]
) -> dict[str, float]:
    """Sums for :func:`rnnlab.tasks.seq2seq.Seq2SeqTask.metrics`: ``edits``, ``ref_tokens``,
    ``wrong`` (sequences equal to no reference) and ``sequences``."""
    sums = {"edits": 0.0, "ref_tokens": 0.0, "wrong": 0.0, "sequences": float(len(hypotheses))}
    for hyp, refs in zip(hypotheses, references, strict=True):
        edits, length = closest(list(hyp), [list(r) for r in refs])
        sums["edits"] += edits
        sums["ref_tokens"] += length
        sums["wrong"] += float(all(list(hyp) != list(r) for r in refs))
    return sums


def _metrics():
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(), CHRF()


def text_stat_sums(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """BLEU's and chrF's summed sentence statistics (``bleu_0``.., ``chrf_0``..) of detokenised
    texts; every source's references are padded to the same count by repeating its first
    (a repeated reference changes neither score)."""
    bleu, chrf = _metrics()
    width = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(width)]
    sums: dict[str, float] = {}
    # sacrebleu 2.x: _extract_corpus_statistics gives one statistics row per sentence
    for name, metric in (("bleu", bleu), ("chrf", chrf)):
        rows = metric._extract_corpus_statistics(list(hypotheses), streams)
        for row in rows:
            for k, value in enumerate(row):
                sums[f"{name}_{k}"] = sums.get(f"{name}_{k}", 0.0) + float(value)
    return sums


def text_scores(sums: dict[str, float]) -> dict[str, float]:
    """``bleu`` and ``chrf`` (0..100) from :func:`text_stat_sums`' sums."""
    bleu, chrf = _metrics()
    out = {}
    for name, metric in (("bleu", bleu), ("chrf", chrf)):
        keys = sorted((k for k in sums if k.startswith(name + "_")), key=lambda k: int(k[5:]))
        if keys:
            stats = [sums[k] for k in keys]
            if name == "bleu":
                stats = [int(round(v)) for v in stats]
            out[name] = float(metric._compute_score_from_stats(stats).score)
    return out
