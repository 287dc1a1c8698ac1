"""Language-balanced sampling, length bucketing and the deterministic global batch plan.

Every host computes the same plan of *global* batches from metadata alone (lengths, languages),
then decodes only its own slice. This is what makes the pipeline
  - static-shape: each batch gets one padded length S from a small set (the bucket boundaries),
    the same on every host, so `jax.make_array_from_process_local_data` sees equal local shapes;
  - exactly resumable: the plan is a pure function of (seed, small state), and the state is a
    few integers plus the ids waiting in bucket queues (JSON, saved with the checkpoint);
  - elastic: the global plan does not depend on the number of hosts.

Training split (`TrainPlanner`): language l is drawn with p_l ∝ hours_l^alpha (XLS-R: alpha=0.5),
then a corpus c within l with p ∝ hours_{l,c}^corpus_alpha, then the next utterance of (l, c) in a
per-epoch permutation. Utterances queue in their length bucket; a full queue is a batch.
Evaluation splits (`EvalPlanner`): one pass over every utterance in corpus order, grouped by
bucket; the last batch of a bucket is topped up with copies marked invalid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_DRAW_BLOCK = 1024  # language/corpus uniforms are generated this many draws at a time


def language_probabilities(hours: dict[str, float], alpha: float) -> dict[str, float]:
    """p_l ∝ hours_l^alpha (alpha=1: natural distribution; alpha=0: uniform over languages)."""
    w = {k: max(h, 0.0) ** alpha if h > 0 else 0.0 for k, h in hours.items()}
    total = sum(w.values())
    if total <= 0:
        raise ValueError("no audio to sample from")
    return {k: v / total for k, v in w.items()}


def bucket_boundaries(
    min_len: int,
    max_len: int,
    num_buckets: int,
    multiple: int,
    given: Sequence[int] = (),
) -> list[int]:
    """Padded lengths (samples, ascending), the last one = max_len rounded down to `multiple`.

    `given` boundaries are used as they are, those above the cap dropped; without `given`,
    `num_buckets` multiples of `multiple` spaced
    geometrically from min_len to max_len (long utterances cost more, so finer steps at the short
    end waste a similar fraction of padding in every bucket).
    """
    top = max(multiple, (max_len // multiple) * multiple)
    if given:
        b = sorted({int(x) for x in given if 0 < int(x) <= top})
    else:
        lo = max(min_len, multiple)
        n = max(num_buckets, 1)
        raw = [lo * (top / lo) ** (i / max(n - 1, 1)) for i in range(n)] if top > lo else [top]
        b = sorted({max(multiple, round(x / multiple) * multiple) for x in raw[1:]})
        # The lowest boundary rounds down, so with crop_to_batch_min no utterance of at least
        # min_len samples is ever padded.
        b.insert(0, max(multiple, (raw[0] // multiple) * multiple))
        b = sorted(set(b))
    b = [x for x in b if x <= top]
    if not b or b[-1] < top:
        b.append(top)
    return b


class Plan:
    """Shared planning facts: the kept utterances and their buckets."""

    def __init__(
        self,
        refs: np.ndarray,  # int64 [n, 2]: (source index, entry index) of every kept utterance
        lengths: np.ndarray,  # int64 [n]: length at 16 kHz
        langs: np.ndarray,  # int32 [n]: language id
        buckets: np.ndarray,  # int32 [n]: bucket index
        shapes: Sequence[int],  # padded length S per bucket
        label_lens: Sequence[int],  # padded label length L per bucket (0 when no labels)
        batch_size: int,
        seed: int,
    ):
        self.refs, self.lengths, self.langs, self.buckets = (
            refs,
            lengths,
            langs,
            buckets,
        )
        self.shapes, self.label_lens = list(shapes), list(label_lens)
        self.batch_size, self.seed = batch_size, seed


class TrainPlanner:
    """Infinite, seeded stream of global training batches; `state()`/`restore()` for resume."""

    def __init__(self, plan: Plan, lang_probs: np.ndarray, corpus_alpha: float, num_sources: int):
        self.plan = plan
        n_lang = len(lang_probs)
        # Groups: (language, source) pairs that have utterances.
        self.groups: list[np.ndarray] = []  # row indices into plan arrays per group
        self.group_keys: list[str] = []
        lang_groups: list[list[int]] = [[] for _ in range(n_lang)]
        group_hours = []
        for lang in range(n_lang):
            for s in range(num_sources):
                rows = np.flatnonzero((plan.langs == lang) & (plan.refs[:, 0] == s))
                if rows.size:
                    lang_groups[lang].append(len(self.groups))
                    self.groups.append(rows)
                    self.group_keys.append(f"{lang}/{s}")
                    group_hours.append(float(plan.lengths[rows].sum()))
        probs = np.asarray(lang_probs, dtype=np.float64)
        probs = np.where([len(g) > 0 for g in lang_groups], probs, 0.0)
        if probs.sum() <= 0:
            raise ValueError("no utterances left to sample after filtering")
        self.lang_cdf = np.cumsum(probs / probs.sum())
        self.lang_groups = lang_groups
        self.group_cdf = []
        for gs in lang_groups:
            w = np.array([group_hours[g] ** corpus_alpha for g in gs]) if gs else np.ones(0)
            self.group_cdf.append(np.cumsum(w / w.sum()) if gs else w)
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}  # group -> (epoch, permutation)
        self.restore(None)

    # -- state -----------------------------------------------------------------------------------
    def restore(self, state: dict | None) -> None:
        """Resets to the start (None) or to a `state()` snapshot."""
        nb = len(self.plan.shapes)
        self._perm_cache = {}  # per instance: copies (one per stream) never share it
        self._ublock = None
        if state is None:
            self.draws, self.batches = 0, 0
            self.cursors = [[0, 0] for _ in self.groups]
            self.pending: list[list[list[int]]] = [[] for _ in range(nb)]
            return
        self.draws, self.batches = int(state["draws"]), int(state["batches"])
        cur = state["cursors"]
        self.cursors = [list(cur.get(k, [0, 0])) for k in self.group_keys]
        self.pending = [[list(x) for x in q] for q in state["pending"]]
        if len(self.pending) != nb:
            raise ValueError("saved input state has a different number of buckets")

    def state(self) -> dict:
        """JSON-serialisable position: counters, per-group epoch cursors, bucket queues."""
        return {
            "draws": self.draws,
            "batches": self.batches,
            "cursors": {k: list(c) for k, c in zip(self.group_keys, self.cursors)},
            "pending": [[list(x) for x in q] for q in self.pending],
        }

    # -- sampling --------------------------------------------------------------------------------
    def _perm(self, g: int, epoch: int) -> np.ndarray:
        hit = self._perm_cache.get(g)
        if hit is None or hit[0] != epoch:
            rng = np.random.default_rng([self.plan.seed, 3, g, epoch])
            hit = (epoch, rng.permutation(len(self.groups[g])))
            self._perm_cache[g] = hit
        return hit[1]

    def _uniforms(self, k: int) -> np.ndarray:
        """The 2 uniforms of draw k: a pure function of (seed, k), made in blocks because one
        Generator per draw would cost more than the rest of the planning together."""
        block = k // _DRAW_BLOCK
        if self._ublock is None or self._ublock[0] != block:
            rng = np.random.default_rng([self.plan.seed, 1, block])
            self._ublock = (block, rng.random((_DRAW_BLOCK, 2)))
        return self._ublock[1][k % _DRAW_BLOCK]

    def draw(self) -> tuple[int, int]:
        """Draws one utterance: returns (draw id, plan row)."""
        k = self.draws
        self.draws += 1
        u = self._uniforms(k)
        lang = min(
            int(np.searchsorted(self.lang_cdf, u[0], side="right")),
            len(self.lang_cdf) - 1,
        )
        cdf = self.group_cdf[lang]
        g = self.lang_groups[lang][min(int(np.searchsorted(cdf, u[1], side="right")), len(cdf) - 1)]
        epoch, pos = self.cursors[g]
        row = int(self.groups[g][self._perm(g, epoch)[pos]])
        pos += 1
        self.cursors[g] = [epoch + 1, 0] if pos == len(self.groups[g]) else [epoch, pos]
        return k, row

    def next_batch(self) -> dict:
        """Returns the next global batch {"bucket", "rows" [B], "draws" [B], "valid" [B]}."""
        while True:
            k, row = self.draw()
            b = int(self.plan.buckets[row])
            q = self.pending[b]
            q.append([k, row])
            if len(q) == self.plan.batch_size:
                self.pending[b] = []
                self.batches += 1
                return {
                    "bucket": b,
                    "rows": [r for _, r in q],
                    "draws": [d for d, _ in q],
                    "valid": [True] * len(q),
                }


class EvalPlanner:
    """One pass over every kept utterance, bucket by bucket, in corpus order."""

    def __init__(self, plan: Plan):
        self.plan = plan
        B = plan.batch_size
        self.batch_list = []
        for b in range(len(plan.shapes)):
            rows = np.flatnonzero(plan.buckets == b)
            for start in range(0, rows.size, B):
                chunk = [int(r) for r in rows[start : start + B]]
                valid = [True] * len(chunk) + [False] * (B - len(chunk))
                chunk += [chunk[i % len(chunk)] for i in range(B - len(chunk))]
                self.batch_list.append({"bucket": b, "rows": chunk, "draws": [-1] * B, "valid": valid})
        self.restore(None)

    def __len__(self) -> int:
        return len(self.batch_list)

    def restore(self, state: dict | None) -> None:
        """Resets to the start (None) or to a `state()` snapshot."""
        self.batches = 0 if state is None else int(state["batches"])

    def state(self) -> dict:
        """JSON-serialisable position."""
        return {"batches": self.batches}

    def next_batch(self) -> dict | None:
        """The next global batch, or None after the last."""
        if self.batches >= len(self.batch_list):
            return None
        self.batches += 1
        return self.batch_list[self.batches - 1]


def label_length(shape: int, samples_per_label: int) -> int:
    """Padded label length for an audio bucket of `shape` samples (multiple of 8)."""
    return 8 * math.ceil(math.ceil(shape / samples_per_label) / 8)
