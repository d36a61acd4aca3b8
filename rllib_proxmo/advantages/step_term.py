"""Step-level credit: PSA's proximity-weighted baseline (paper Eq. 9-11) and GiGPO.

Both compare the raw state texts of steps of the same task group. PSA weighs
every candidate by a softmax over TF-IDF cosine similarities; GiGPO groups
steps whose state text is identical.

Work is block-diagonal: similarities are only ever computed between steps of
one group (and, for ``psa_scope="same_step"``, one step index), so time and
memory grow with the sum of squared block sizes, not with the squared batch
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from rllib_proxmo.advantages.episode_term import EPS, ZERO_STD, group_mean_std

__all__ = [
    "SoftBaseline",
    "check_scope",
    "exact_match_groups",
    "gigpo_step_advantage",
    "similarity_softmax",
    "soft_baseline",
    "tfidf_features",
]

PSA_SCOPES = ("same_step", "group")
_PAIRWISE_MAX_BLOCK = 16


def _unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(unique_texts, index)`` with ``unique_texts[index[i]] == texts[i]``."""
    position: dict[str, int] = {}
    index = np.fromiter((position.setdefault(s, len(position)) for s in texts), dtype=np.int64, count=len(texts))
    return list(position), index


def tfidf_features(texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
    """TF-IDF vectors of the distinct texts, equal to a default ``TfidfVectorizer``.

    The result equals ``TfidfVectorizer().fit_transform(texts)`` row for row
    (same vocabulary, smoothed idf counted over all ``n`` texts, L2 norm), but
    each distinct text is tokenised once: agent batches repeat many states
    (the initial observation of every rollout of a task, "Nothing happens.").

    Args:
        texts: n strings.

    Returns:
        ``(features, index)``: ``features`` is a (u, V) CSR matrix with one
        L2-normalised row per distinct text (an all-zero row when the text has
        no token, e.g. empty or punctuation only); ``index`` (n,) maps every
        input row to its distinct text.
    """
    unique, index = _unique_texts(texts)
    multiplicity = np.bincount(index, minlength=len(unique)).astype(np.float64)
    try:
        counts = CountVectorizer().fit_transform(unique).tocsr().astype(np.float64)
    except ValueError:  # no text has a single token: empty vocabulary
        return sp.csr_matrix((len(unique), 0)), index
    present = counts.copy()
    present.data[:] = 1.0
    document_frequency = present.T @ multiplicity
    idf = np.log((len(texts) + 1.0) / (document_frequency + 1.0)) + 1.0
    weighted = counts @ sp.diags(idf)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ weighted), index


@dataclass(frozen=True)
class SoftBaseline:
    """PSA's soft baseline and the statistics of its weights.

    Attributes:
        baseline: (n,) ``B_i = sum_j w_ij R_j`` over the candidates of step i.
        entropy: (n,) Shannon entropy (nats) of row i's weights.
        effective_neighbours: (n,) ``1 / sum_j w_ij**2``, between 1 (all weight on
            one candidate) and the number of candidates (uniform).
        num_candidates: (n,) number of candidates of step i, itself included.
    """

    baseline: np.ndarray
    entropy: np.ndarray
    effective_neighbours: np.ndarray
    num_candidates: np.ndarray


def _candidate_blocks(group_index: np.ndarray, t: np.ndarray, scope: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by block and the block boundaries (``starts`` has B+1 entries)."""
    if scope == "same_step":
        order = np.lexsort((t, group_index))
        keys = np.stack([group_index[order], t[order]])
        change = np.any(keys[:, 1:] != keys[:, :-1], axis=0)
    else:
        order = np.argsort(group_index, kind="stable")
        change = group_index[order][1:] != group_index[order][:-1]
    starts = np.concatenate([[0], np.flatnonzero(change) + 1, [len(order)]])
    return order, starts


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
    always including i. ``sim`` is the cosine similarity of TF-IDF vectors; a
    state whose vector is empty has similarity 1 with itself and 0 with every
    other state.

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
    n = len(returns)
    out = [np.zeros(n) for _ in range(3)] + [np.zeros(n, dtype=np.int64)]
    if not n:
        return SoftBaseline(*out)
    order, starts = _candidate_blocks(group_index, t, scope)
    sizes = np.diff(starts)
    # Blocks of equal size are processed together as one (blocks, k, k) tensor.
    for size in np.unique(sizes):
        first = starts[:-1][sizes == size]
        rows = order[first[:, None] + np.arange(size)]  # (blocks, k)
        weights = _softmax_weights(features, feature_index[rows], tau)  # (blocks, k, k)
        flat = rows.ravel()
        out[0][flat] = np.einsum("bij,bj->bi", weights, returns[rows]).ravel()
        with np.errstate(divide="ignore"):
            log_w = np.where(weights > 0, np.log(weights), 0.0)
        out[1][flat] = -(weights * log_w).sum(axis=-1).ravel()
        out[2][flat] = (1.0 / (weights * weights).sum(axis=-1)).ravel()
        out[3][flat] = size
    return SoftBaseline(*out)


def _softmax_weights(features: sp.csr_matrix, members: np.ndarray, tau: float) -> np.ndarray:
    """Softmax over each block's cosine similarities.

    Args:
        features: (u, V) L2-normalised rows.
        members: (blocks, k) feature row of each block member.
        tau: temperature.

    Returns:
        (blocks, k, k) row-stochastic weights.
    """
    num_blocks, k = members.shape
    similarity = _block_similarity(features, members)
    # Exactly 1 on the diagonal: also for empty vectors, and without rounding.
    similarity[:, np.arange(k), np.arange(k)] = 1.0
    return similarity_softmax(similarity, tau)


def similarity_softmax(similarity: np.ndarray, tau: float) -> np.ndarray:
    """``softmax(similarity / tau)`` over the last axis, stable for tiny tau."""
    logits = similarity / tau
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


def _block_similarity(features: sp.csr_matrix, members: np.ndarray) -> np.ndarray:
    """(blocks, k, k) cosine similarities between the members of each block.

    Small blocks (PSA's same-step candidates: at most the group size) are
    handled all at once as a list of distinct pairs of distinct states, since
    the rollouts of a task share many states. Large blocks (a whole group) use
    one sparse product per block over its distinct states.
    """
    num_blocks, k = members.shape
    if not features.shape[1]:
        return np.zeros((num_blocks, k, k))
    if k > _PAIRWISE_MAX_BLOCK:
        similarity = np.empty((num_blocks, k, k))
        for block, block_members in enumerate(members):
            distinct, local = np.unique(block_members, return_inverse=True)
            rows = features[distinct]
            similarity[block] = (rows @ rows.T).toarray()[np.ix_(local, local)]
        return similarity
    left = np.repeat(members, k, axis=1).ravel()
    right = np.tile(members, (1, k)).ravel()
    pair_key = left * features.shape[0] + right
    unique_keys, pair_index = np.unique(pair_key, return_inverse=True)
    a, b = np.divmod(unique_keys, features.shape[0])
    dots = np.asarray(features[a].multiply(features[b]).sum(axis=1)).ravel()
    return dots[pair_index.reshape(-1)].reshape(num_blocks, k, k)


def exact_match_groups(group_index: np.ndarray, state: Sequence[str]) -> np.ndarray:
    """(n,) dense id of GiGPO's step group: same task group and identical state text."""
    _, text_index = _unique_texts(state)
    key = group_index * (int(text_index.max(initial=0)) + 1) + text_index
    return np.unique(key, return_inverse=True)[1].reshape(-1)


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
