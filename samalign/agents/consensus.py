"""Collaborative Consensus Refinement (CCR), SAM-NER §3.1, Algorithm 1, Eq. 3–5.

The explorer (recall-oriented, silver-supervised) over-generates generic one-word mentions.
Its single-token mentions form the verification set V_noise; one of them is noise (D_noise)
unless the anchor extractor produced the same string (Eq. 3). The denoised explorer set is
E_exp minus D_noise (Eq. 4), and the final candidates are the de-duplicated union of the
anchor set and the denoised explorer set (Eq. 5).
"""

from __future__ import annotations

from collections.abc import Sequence

NOISE_REASON = (
    "single-token explorer mention not corroborated by the anchor extractor "
    "(SAM-NER Algorithm 1, Eq. 3)"
)


def refine(anchor: Sequence[str], explorer: Sequence[str]) -> tuple[list[str], list[str]]:
    r"""Collaborative Consensus Refinement exactly as Algorithm 1 and Eq. 3–5 define it.

    Mentions are compared by string equality; a mention's length is its whitespace token
    count (``len(e.split())``).

    Args:
        anchor: E_anc, mentions from the precision-oriented anchor extractor.
        explorer: E_exp, mentions from the recall-oriented explorer extractor.

    Returns:
        ``(final, noise)``: E_final = E_anc ∪ (E_exp \ D_noise) and D_noise, both
        de-duplicated, in first-seen order (anchor mentions first).
    """
    anchor_set = set(anchor)
    noise = [e for e in dict.fromkeys(explorer) if len(e.split()) == 1 and e not in anchor_set]
    noise_set = set(noise)
    denoised = [e for e in explorer if e not in noise_set]
    final = list(dict.fromkeys([*anchor, *denoised]))
    return final, noise


__all__ = ["NOISE_REASON", "refine"]
