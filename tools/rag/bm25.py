"""Okapi BM25 over a sparse term matrix with the per-document weights precomputed."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

_TOKEN = re.compile(r"\w+", re.UNICODE)
# Function words of English and German carry no topic and only add noise to the scores.
_STOPWORD_TEXT = """
    a an and are as at be by for from has have in is it its of on or our that the this to was we
    were will with you your der die das und ist ein eine einen dem den des mit für von zu im auf
    bei wir sie ihr ihre unsere unser oder nicht wie es sich
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS and len(t) > 1]


class BM25Index:
    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        counts: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.float64)
        for row, text in enumerate(texts):
            tokens = tokenize(text)
            lengths[row] = len(tokens)
            term_ids, term_counts = np.unique(
                [self.vocabulary.setdefault(t, len(self.vocabulary)) for t in tokens],
                return_counts=True,
            )
            rows.extend([row] * len(term_ids))
            cols.extend(term_ids.tolist())
            counts.extend(term_counts.tolist())
        shape = (len(texts), max(len(self.vocabulary), 1))
        tf = sparse.csr_matrix((np.asarray(counts, dtype=np.float64), (rows, cols)), shape=shape)
        doc_freq = np.bincount(np.asarray(cols, dtype=np.int64), minlength=shape[1])
        idf = np.log1p((len(texts) - doc_freq + 0.5) / (doc_freq + 0.5))
        avg_len = lengths.mean() if len(texts) else 1.0
        norm = k1 * (1 - b + b * lengths / max(avg_len, 1e-9))
        tf = tf.tocoo()
        weights = tf.data * (k1 + 1) / (tf.data + norm[tf.row]) * idf[tf.col]
        # Column-major so a query reads only the columns of its terms.
        self._weights = sparse.csc_matrix((weights, (tf.row, tf.col)), shape=shape)
        self.size = len(texts)

    def scores(self, query: str) -> NDArray[np.float64]:
        term_ids = sorted({self.vocabulary[t] for t in tokenize(query) if t in self.vocabulary})
        if not term_ids or self.size == 0:
            return np.zeros(self.size, dtype=np.float64)
        return np.asarray(self._weights[:, term_ids].sum(axis=1)).ravel()
