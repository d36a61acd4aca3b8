"""Step-level credit: PSA's proximity-weighted baseline (paper Eq. 9-11) and GiGPO.

Both compare the raw state texts of steps of the same task group. PSA weighs
every candidate by a softmax over TF-IDF cosine similarities; GiGPO groups
steps whose state text is identical.

PSA's kernel is public, in pieces, because the offline regressor of
:mod:`rllib_proxmo.analysis.psa_regression` is built from the same ones:

- :func:`fit_tfidf` / :class:`TfidfModel`: TF-IDF vectors of the distinct texts;
- :func:`block_cosine`: cosine similarities between the members of blocks;
- :func:`similarity_softmax` and :func:`block_soft_baseline`: the
  softmax-weighted mean of the candidates' values for every query, the
  candidates of a query being the members of its block.

:func:`soft_baseline` is the training-time composition: every step is a query
and a candidate of its own block ("leave-one-in", with similarity 1 to itself).

Work is block-diagonal: similarities are only ever computed between steps of
one group (and, for ``psa_scope="same_step"``, one step index), so time and
memory grow with the sum of squared block sizes, not with the squared batch
size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp

from rllib_proxmo.advantages.batch import first_seen_codes, sorted_codes
from rllib_proxmo.advantages.episode_term import EPS, ZERO_STD, group_mean_std

__all__ = [
    "PSA_SCOPES",
    "SoftBaseline",
    "TfidfModel",
    "block_cosine",
    "block_soft_baseline",
    "check_scope",
    "exact_match_groups",
    "fit_tfidf",
    "gigpo_step_advantage",
    "psa_blocks",
    "similarity_softmax",
    "soft_baseline",
    "tfidf_features",
]

PSA_SCOPES = ("same_step", "group")
_PAIRWISE_MAX_PAIRS = 256  # blocks with at most this many (query, candidate) pairs take the pair path
_PAIR_CHUNK = 200_000  # distinct pairs per sparse product on the pair path (bounds memory)


# ---------------------------------------------------------------------------------------------- TF-IDF


@dataclass(frozen=True, eq=False)
class TfidfModel:
    """A fitted TF-IDF embedding (see :func:`fit_tfidf`).

    Attributes:
        terms: the V vocabulary terms, sorted (scikit-learn's column order).
        idf: (V,) smoothed inverse document frequencies ``log((n + 1) / (df + 1)) + 1``.
        ngram_range: word n-gram lengths ``(low, high)``.
        sublinear_tf: whether term counts c enter as ``1 + log(c)``.
    """

    terms: tuple[str, ...]
    idf: np.ndarray
    ngram_range: tuple[int, int]
    sublinear_tf: bool

    def transform(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """L2-normalised TF-IDF rows of the distinct ``texts``, as ``TfidfVectorizer.transform`` gives them.

        Returns:
            ``(features, index)``: (u, V) CSR rows of the u distinct texts (in
            order of first appearance) and (n,) the row of each text; a text
            with no known term has an all-zero row.
        """
        codes, index = first_seen_codes(texts)
        unique = list(codes)
        if not self.terms:
            return sp.csr_matrix((len(unique), 0)), index
        from sklearn.feature_extraction.text import CountVectorizer  # here: the command lines skip its import

        counter = CountVectorizer(ngram_range=self.ngram_range, vocabulary=self.terms)
        counts = counter.transform(unique).astype(np.float64)
        return _tfidf_rows(counts, self.idf, self.sublinear_tf), index


def fit_tfidf(
    texts: Sequence[str],
    *,
    ngram_range: tuple[int, int] = (1, 1),
    sublinear_tf: bool = False,
    min_df: float = 1,
    max_df: float = 1.0,
    max_features: int | None = None,
) -> tuple[TfidfModel, sp.csr_matrix, np.ndarray]:
    """Fit TF-IDF on ``texts`` and embed their distinct members, like scikit-learn's ``TfidfVectorizer``.

    The options are the vectorizer's, with its meaning (ints count documents,
    floats are fractions of ``n``; ``max_features`` keeps the most frequent
    terms; a text is a document however often it repeats), and the result
    equals ``TfidfVectorizer(**options).fit_transform(texts)`` row for row.
    Each distinct text is tokenised once: agent batches repeat many states
    (the initial observation of every rollout of a task, "Nothing happens.").
    Where ``max_features`` cuts between terms of equal frequency, the
    alphabetically first are kept (the vectorizer leaves that order unspecified).

    Args:
        texts: the n documents.
        ngram_range, sublinear_tf, min_df, max_df, max_features: the
            vectorizer's options (defaults: its defaults, the paper's setting).

    Returns:
        ``(model, features, index)``: the fitted :class:`TfidfModel`; (u, V)
        L2-normalised CSR rows of the u distinct texts (an all-zero row for a
        text without a term, e.g. empty or punctuation only; V = 0 when no text
        has a term); (n,) the row of each text.

    Raises:
        ValueError: an option outside the vectorizer's range, or ``min_df`` /
            ``max_df`` that prune every term.
    """
    ngram_range = _check_tfidf_options(ngram_range, sublinear_tf, min_df, max_df, max_features)
    codes, index = first_seen_codes(texts)
    unique, n = list(codes), len(index)
    from sklearn.feature_extraction.text import CountVectorizer  # here: the command lines skip its import

    counter = CountVectorizer(ngram_range=ngram_range)
    try:
        counts = counter.fit_transform(unique).tocsr().astype(np.float64)
    except ValueError:  # no text has a single term: empty vocabulary
        model = TfidfModel((), np.zeros(0), ngram_range, bool(sublinear_tf))
        return model, sp.csr_matrix((len(unique), 0)), index
    multiplicity = np.bincount(index, minlength=len(unique)).astype(np.float64)
    present = counts.copy()
    present.data[:] = 1.0
    document_frequency = present.T @ multiplicity
    keep = document_frequency <= (max_df if isinstance(max_df, Integral) else max_df * n)
    keep &= document_frequency >= (min_df if isinstance(min_df, Integral) else min_df * n)
    if max_features is not None and keep.sum() > max_features:
        frequency = counts.T @ multiplicity
        candidates = np.flatnonzero(keep)
        keep[:] = False
        keep[candidates[np.argsort(-frequency[candidates], kind="stable")[:max_features]]] = True
    if not keep.any():
        raise ValueError(f"min_df={min_df!r} and max_df={max_df!r} prune every term of the {n} texts")
    idf = np.log((n + 1.0) / (document_frequency[keep] + 1.0)) + 1.0
    model = TfidfModel(tuple(counter.get_feature_names_out()[keep]), idf, ngram_range, bool(sublinear_tf))
    return model, _tfidf_rows(counts[:, keep], idf, sublinear_tf), index


def tfidf_features(texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(features, index)`` of :func:`fit_tfidf` with the vectorizer's defaults (the paper's PSA)."""
    _, features, index = fit_tfidf(texts)
    return features, index


def _check_tfidf_options(ngram_range, sublinear_tf, min_df, max_df, max_features) -> tuple[int, int]:
    """The options' errors in words (the vectorizer's own ranges); returns ``ngram_range`` as a tuple."""
    try:
        low, high = ngram_range
    except (TypeError, ValueError):
        low = high = None
    if not all(isinstance(x, Integral) and not isinstance(x, bool) for x in (low, high)) or not 1 <= low <= high:
        raise ValueError(f"ngram_range must be two ints 1 <= low <= high, got {ngram_range!r}")
    if not isinstance(sublinear_tf, (bool, np.bool_)):
        raise ValueError(f"sublinear_tf must be a bool, got {sublinear_tf!r}")
    for name, value in (("min_df", min_df), ("max_df", max_df)):
        is_count = isinstance(value, Integral) and not isinstance(value, bool) and value >= 1
        is_fraction = isinstance(value, Real) and not isinstance(value, (Integral, bool)) and 0.0 <= value <= 1.0
        if not (is_count or is_fraction):
            raise ValueError(f"{name} must be an int >= 1 (documents) or a float in [0, 1] (fraction), got {value!r}")
    if max_features is not None and (
        isinstance(max_features, bool) or not isinstance(max_features, Integral) or max_features < 1
    ):
        raise ValueError(f"max_features must be None or an int >= 1, got {max_features!r}")
    return int(low), int(high)


def _tfidf_rows(counts: sp.csr_matrix, idf: np.ndarray, sublinear_tf: bool) -> sp.csr_matrix:
    """L2-normalised ``tf * idf`` rows of a (u, V) count matrix (all-zero rows stay zero)."""
    weighted = counts.copy()
    if sublinear_tf:
        weighted.data = np.log(weighted.data) + 1.0
    weighted = weighted @ sp.diags(idf)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ weighted)


# ---------------------------------------------------------------------------------------------- similarity


def block_cosine(features: sp.csr_matrix, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine similarities inside blocks: ``out[b, i, j] = cos(features[left[b, i]], features[right[b, j]])``.

    Identical rows have similarity exactly 1 (no rounding); an all-zero row
    (a text without a term) has similarity 0 with every row, itself included.
    Small blocks (PSA's same-step candidates: at most the group size) are
    handled all at once as a list of distinct pairs of distinct rows, since
    the rollouts of a task share many states; large blocks (a whole group)
    take one sparse product per block over its distinct rows.

    Args:
        features: (u, V) L2-normalised rows, e.g. from :func:`fit_tfidf`.
        left: (B, q) row numbers of each block's left members.
        right: (B, r) row numbers of each block's right members.

    Returns:
        (B, q, r) float64.
    """
    (num_blocks, q), r = left.shape, right.shape[1]
    if not features.shape[1] or not num_blocks * q * r:
        return np.zeros((num_blocks, q, r))
    if q * r <= _PAIRWISE_MAX_PAIRS:
        pairs_left = np.repeat(left, r, axis=1).ravel()
        pairs_right = np.tile(right, (1, q)).ravel()
        return _pair_cosine(features, pairs_left, pairs_right).reshape(num_blocks, q, r)
    similarity = np.empty((num_blocks, q, r))
    for block in range(num_blocks):
        left_rows, left_local = sorted_codes(left[block])
        right_rows, right_local = sorted_codes(right[block])
        products = (features[left_rows] @ features[right_rows].T).toarray()
        _, in_left, in_right = np.intersect1d(left_rows, right_rows, assume_unique=True, return_indices=True)
        products[in_left, in_right] = products[in_left, in_right] > 0  # identical rows: exactly 1 (or 0 if empty)
        similarity[block] = products[np.ix_(left_local, right_local)]
    return similarity


def _pair_cosine(features: sp.csr_matrix, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(p,) cosine of rows ``left[k]`` and ``right[k]``, each distinct pair computed once."""
    pair_key = left * features.shape[0] + right
    unique_keys, pair_index = sorted_codes(pair_key)
    a, b = np.divmod(unique_keys, features.shape[0])
    dots = np.empty(len(unique_keys))
    for start in range(0, len(unique_keys), _PAIR_CHUNK):
        chunk = slice(start, start + _PAIR_CHUNK)
        dots[chunk] = np.asarray(features[a[chunk]].multiply(features[b[chunk]]).sum(axis=1)).ravel()
    same = a == b
    dots[same] = dots[same] > 0  # identical rows: exactly 1 (or 0 if empty)
    return dots[pair_index]


def similarity_softmax(similarity: np.ndarray, tau: float) -> np.ndarray:
    """``softmax(similarity / tau)`` over the last axis, stable for tiny tau; ``tau = inf`` gives uniform weights."""
    logits = similarity / tau
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


# ---------------------------------------------------------------------------------------------- PSA


@dataclass(frozen=True)
class SoftBaseline:
    """PSA's soft baseline and the statistics of its weights, one entry per query.

    Attributes:
        baseline: (n,) ``B_i = sum_j w_ij R_j`` over the candidates of query i
            (NaN for a query without candidates).
        entropy: (n,) Shannon entropy (nats) of row i's weights (NaN without candidates).
        effective_neighbours: (n,) ``1 / sum_j w_ij**2``, between 1 (all weight on
            one candidate) and the number of candidates (uniform); 0 without candidates.
        num_candidates: (n,) number of candidates of query i.
    """

    baseline: np.ndarray
    entropy: np.ndarray
    effective_neighbours: np.ndarray
    num_candidates: np.ndarray


Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``similarity(queries (B, q), candidates (B, r)) -> (B, q, r)``: the similarities of the members of B blocks."""


def block_soft_baseline(
    query_block: np.ndarray,
    candidate_block: np.ndarray,
    similarity: Similarity,
    values: np.ndarray,
    tau: float,
) -> SoftBaseline:
    """Softmax-weighted mean of the candidates' values, ``sum_j softmax_j(sim_ij / tau) values_j``, per query.

    The candidates of query i are the candidates of its block. Blocks with the
    same numbers of queries and candidates are processed together as one
    (blocks, q, r) tensor.

    Args:
        query_block: (n,) block number of each query; -1 (or a block without
            candidates) for a query without candidates.
        candidate_block: (m,) block number (>= 0) of each candidate.
        similarity: the similarities of query and candidate numbers, see :data:`Similarity`.
        values: (m,) value of each candidate.
        tau: softmax temperature, > 0; ``math.inf`` gives uniform weights.

    Returns:
        A :class:`SoftBaseline` of (n,) arrays in the queries' order.
    """
    n = len(query_block)
    baseline, entropy = np.full(n, np.nan), np.full(n, np.nan)
    effective, num_candidates = np.zeros(n), np.zeros(n, dtype=np.int64)
    query_order = np.argsort(query_block, kind="stable")
    candidate_order = np.argsort(candidate_block, kind="stable")
    sorted_queries, sorted_candidates = query_block[query_order], candidate_block[candidate_order]
    blocks = np.unique(sorted_queries[sorted_queries >= 0])
    query_start = np.searchsorted(sorted_queries, blocks, side="left")
    query_count = np.searchsorted(sorted_queries, blocks, side="right") - query_start
    candidate_start = np.searchsorted(sorted_candidates, blocks, side="left")
    candidate_count = np.searchsorted(sorted_candidates, blocks, side="right") - candidate_start
    shapes = np.stack([query_count, candidate_count])[:, candidate_count > 0]
    for q, r in np.unique(shapes, axis=1).T:
        chosen = (query_count == q) & (candidate_count == r)
        queries = query_order[query_start[chosen][:, None] + np.arange(q)]  # (blocks, q)
        candidates = candidate_order[candidate_start[chosen][:, None] + np.arange(r)]  # (blocks, r)
        weights = similarity_softmax(similarity(queries, candidates), tau)  # (blocks, q, r)
        rows = queries.ravel()
        baseline[rows] = np.einsum("bij,bj->bi", weights, values[candidates]).ravel()
        with np.errstate(divide="ignore"):
            log_w = np.where(weights > 0, np.log(weights), 0.0)
        entropy[rows] = -(weights * log_w).sum(axis=-1).ravel()
        effective[rows] = (1.0 / (weights * weights).sum(axis=-1)).ravel()
        num_candidates[rows] = r
    return SoftBaseline(baseline, entropy, effective, num_candidates)


def psa_blocks(group_index: np.ndarray, t: np.ndarray, scope: str) -> np.ndarray:
    """(n,) dense number of each step's PSA block: its group, or its group and t for ``"same_step"``."""
    check_scope(scope)
    if scope == "group" or not len(t):
        return np.asarray(group_index, dtype=np.int64)
    return sorted_codes(np.asarray(group_index, dtype=np.int64) * (int(t.max()) + 1) + t)[1]


def soft_baseline(
    group_index: np.ndarray,
    t: np.ndarray,
    returns: np.ndarray,
    features: sp.csr_matrix,
    feature_index: np.ndarray,
    tau: float,
    scope: str = "same_step",
) -> SoftBaseline:
    """PSA's baseline ``B_i = sum_j softmax_j(sim(s_i, s_j) / tau) R_j`` (Eq. 10-11a).

    The candidates j of step i are the steps of its group (``scope="group"``) or
    the steps of its group with the same t (``scope="same_step"``, Eq. 10),
    always including i. ``sim`` is the cosine similarity of TF-IDF vectors
    (:func:`block_cosine`); a step has similarity 1 with itself, also when its
    vector is empty (it then has 0 with every other step).

    Args:
        group_index: (n,) dense group numbers.
        t: (n,) step indices.
        returns: (n,) discounted returns-to-go ``R_t``.
        features: (u, V) L2-normalised TF-IDF rows of the distinct states.
        feature_index: (n,) row of ``features`` of each step.
        tau: softmax temperature, > 0.
        scope: ``"same_step"`` or ``"group"``.

    Returns:
        A :class:`SoftBaseline` with (n,) arrays in the input row order.
    """

    def similarity(steps: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        # Queries and candidates are the same steps in the same order (one block array, one stable
        # sort), so a step meets itself on the diagonal: leave-one-in, similarity 1 even for an empty vector.
        cosine = block_cosine(features, feature_index[steps], feature_index[candidates])
        size = steps.shape[1]
        cosine[:, np.arange(size), np.arange(size)] = 1.0
        return cosine

    block = psa_blocks(group_index, t, scope)
    return block_soft_baseline(block, block, similarity, returns, tau)


# ---------------------------------------------------------------------------------------------- GiGPO


def exact_match_groups(group_index: np.ndarray, state: Sequence[str]) -> np.ndarray:
    """(n,) dense id of GiGPO's step group: same task group and identical state text."""
    _, text_index = first_seen_codes(state)
    return sorted_codes(group_index * (int(text_index.max(initial=0)) + 1) + text_index)[1]


def gigpo_step_advantage(step_group: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """GiGPO's step advantage ``(R_t - mean) / (std + EPS)`` within exact-match step groups.

    The std is the unbiased one; a step group of one step or with zero std
    gives 0.

    Args:
        step_group: (n,) dense step-group ids from :func:`exact_match_groups`.
        returns: (n,) discounted returns-to-go.

    Returns:
        (n,) float64.
    """
    if not len(returns):
        return np.zeros(0)
    count, mean, std = group_mean_std(returns, step_group, ddof=1)
    degenerate = (count < 2) | (std < ZERO_STD)
    return np.where(degenerate, 0.0, (returns - mean) / (std + EPS))


def check_scope(scope: str) -> None:
    """Raise ``ValueError`` unless ``scope`` is one of :data:`PSA_SCOPES`."""
    if scope not in PSA_SCOPES:
        raise ValueError(f"psa_scope must be one of {PSA_SCOPES}, got {scope!r}")
