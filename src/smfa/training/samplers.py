"""The training samplers (``--sampler``): the ``Trainer``'s own random order, or length buckets."""

from __future__ import annotations

import torch

from smfa.errors import ConfigError

SAMPLERS = ("random", "length_buckets")


def length_bucket_order(lengths: list[int], batch_size: int, seed: int, epoch: int, window: int = 50) -> list[int]:
    """One epoch's example order for ``sampler="length_buckets"``: a seeded shuffle, cut into windows of
    ``window`` batches, each window sorted by length and cut into batches, and then **the batches shuffled**
    across the whole epoch (leftover examples that fill no batch go last). Each batch holds examples of
    similar length (less padding) while the order of batches, and so of question kinds, stays random —
    HF's ``group_by_length`` serves each window longest-first, which on the tiny bench (lengths follow the
    question kind) cost the vanilla 40 points of image memory. Deterministic in (seed, epoch)."""
    if batch_size < 1 or window < 1:
        raise ConfigError(f"length buckets need batch_size >= 1 and window >= 1 (got {batch_size}, {window})")
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    span = window * batch_size
    batches: list[list[int]] = []
    rest: list[int] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        for j in range(0, len(chunk), batch_size):
            (batches.append if j + batch_size <= len(chunk) else rest.extend)(chunk[j:j + batch_size])
    shuffled = torch.randperm(len(batches), generator=g).tolist()
    return [i for b in shuffled for i in batches[b]] + rest


class LengthBucketSampler(torch.utils.data.Sampler):
    """Yields :func:`length_bucket_order`; the ``Trainer`` calls ``set_epoch`` before every epoch (resume too)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(length_bucket_order(self.lengths, self.batch_size, self.seed, self.epoch))
