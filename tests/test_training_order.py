"""Finite training sets are read in a fresh permutation per epoch (a pure function of seed and step);
streams (procedural images, scene renders) keep their index order, so their runs are unchanged."""

from __future__ import annotations

from collections import Counter

import numpy as np

from aigc_synth.training.trainer import STREAM_LENGTH, step_batches, step_item_indices


def test_each_epoch_of_a_finite_set_is_a_permutation_of_its_own():
    n, B = 10, 4
    items = [i for s in range(15) for i in step_item_indices(n, 3, s, B)]  # 60 items = 6 epochs
    epochs = [items[e * n:(e + 1) * n] for e in range(6)]
    assert all(sorted(e) == list(range(n)) for e in epochs)  # every item once per epoch
    assert len({tuple(e) for e in epochs}) == 6 and epochs[0] != list(range(n))  # shuffled, and anew each epoch
    assert items == [i for s in range(15) for i in step_item_indices(n, 3, s, B)]  # pure: resuming reads the same
    assert items != [i for s in range(15) for i in step_item_indices(n, 4, s, B)]  # the run's seed draws the orders


def test_streams_keep_their_index_order():
    assert step_item_indices(STREAM_LENGTH, 0, 7, 4) == [28, 29, 30, 31]


class _SortedByLabel:
    """A data set stored the way annotation files come: sorted by a condition (here 3 blocks of 100)."""

    def __len__(self):
        return 300

    def batch(self, indices):
        return {"label": [i // 100 for i in indices]}


def test_batches_of_a_sorted_set_mix_its_blocks_with_and_without_loader_workers():
    data = _SortedByLabel()
    inline = [b["label"] for b in step_batches(data, 32, 0, 9, workers=0, seed=1)]
    assert all(len(set(labels)) == 3 for labels in inline)  # in file order the first 3 batches would be all 0
    seen = Counter(x for b in inline for x in b)  # 9 steps of 32 = 288 of the epoch's 300, none twice
    assert sum(seen.values()) == 288 and max(seen.values()) <= 100
    workers = [b["label"] for b in step_batches(data, 32, 0, 9, workers=1, seed=1)]
    assert workers == inline
    assert np.array_equal(np.array(inline[3:]), np.array([b["label"] for b in step_batches(data, 32, 3, 9, workers=0, seed=1)]))
