"""Text pairs as unpadded model inputs (alignment pairs, held-out parallel distances)."""

from __future__ import annotations

from collections.abc import Sequence


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int) -> list[dict]:
    """One input per ``(first, second)`` pair; an empty second text is left out (one segment).

    Rows stay unpadded: batches are padded to their own longest row when they are formed.
    """
    firsts = [a for a, _ in pairs]
    seconds = [b for _, b in pairs]
    has_second = any(seconds)
    enc = tokenizer(firsts, seconds if has_second else None, truncation=True, max_length=max_length)
    return [{k: enc[k][i] for k in enc} for i in range(len(firsts))]
