"""The order windows are trained in: seeded epoch permutations, or one-bucket batches. The
position is part of every checkpoint, so a resumed run continues the same sequence."""

from __future__ import annotations


class DataOrder:
    """Epoch permutations from (seed, epoch); the position is part of every checkpoint."""

    def __init__(self, n: int, seed: int, epoch: int = 0, pos: int = 0):
        self.n, self.seed, self.epoch, self.pos = n, seed, epoch, pos
        self._perm = self._make()

    def _make(self):
        import torch

        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._make()
            out.append(self._perm[self.pos])
            self.pos += 1
        return out


class BucketOrder:
    """Batches that each hold one bucket. Per epoch (seeded by seed and epoch): every bucket's
    windows are shuffled and cut into batches of `batch` (the last one topped up from the start of
    its own shuffle), then the batches of all buckets are shuffled together. The position is part
    of every checkpoint, as with DataOrder."""

    def __init__(self, buckets: list[str], batch: int, seed: int, epoch: int = 0, pos: int = 0):
        self.groups: dict[str, list[int]] = {}
        for i, b in enumerate(buckets):
            self.groups.setdefault(b, []).append(i)
        self.batch, self.seed, self.epoch, self.pos = batch, seed, epoch, pos
        self._plan = self._make()

    def _make(self) -> list[list[int]]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        plan = []
        for name in sorted(self.groups):
            members = self.groups[name]
            perm = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
            for start in range(0, len(perm), self.batch):
                chunk = perm[start : start + self.batch]
                while len(chunk) < self.batch:  # a small bucket repeats its own windows, never another's
                    chunk.append(perm[(len(chunk) - (len(perm) - start)) % len(perm)])
                plan.append(chunk)
        return [plan[i] for i in torch.randperm(len(plan), generator=g).tolist()]

    def take(self, k: int) -> list[int]:
        if k != self.batch:
            raise ValueError(f"BucketOrder hands out batches of {self.batch}, not {k}")
        if self.pos >= len(self._plan):
            self.epoch, self.pos = self.epoch + 1, 0
            self._plan = self._make()
        self.pos += 1
        return list(self._plan[self.pos - 1])


def make_order(windows, batch: int, seed: int, epoch: int = 0, pos: int = 0):
    """One bucket: the plain epoch permutation (what every run before buckets used, so the seed
    preset's batches are unchanged); several: BucketOrder."""
    names = [w.bucket for w in windows]
    if len(set(names)) <= 1:
        return DataOrder(len(windows), seed, epoch, pos)
    return BucketOrder(names, batch, seed, epoch, pos)
