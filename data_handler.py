"""The batch contract and the loader layer. A batch is a Batch: named tensors (FIELDS), read
by name. Each dataset spec declares the fields its batches carry (dataset_specs.batch_fields)
and each method the fields it reads (methods.Method.reads); a method that reads a field its
dataset lacks is refused in one line before anything runs. The datasets themselves:
colored_mnist.py (LNL's and IRM's Colored MNIST), lff_cmnist.py (LfF's Colored MNIST),
andmask_datasets.py (AND-mask's spiral signatures and CIFAR-10 random labels),
image_datasets.py (Dogs and Cats, IMDB-Face).
"""
import copy
import hashlib

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import UserError

# bias's value for "no target here" (a background pixel of a colour-bin target): ignored by the loss
IGNORE_INDEX = 255

# The fields a batch may carry (issue #33), by name.
FIELDS = {
    "x": "the input",
    "y": "the label",
    "bias": "h's bias target: colour bins per stroke pixel on Colored MNIST (LNL, Kim et al. "
            "2019, §4.1), an image attribute on Dogs and Cats and IMDB-Face",
    "env": "an environment index per example (IRM, AND-mask, GEN-mask)",
    "bias_label": "the image-level bias label: the digit whose colour the image wears, the "
                  "image attribute (GroupDRO's groups and the worst-group accuracy: (y, it))",
    "index": "the example's position in its set, the same in every epoch (LfF's per-example "
             "loss averages, JTT's error set)",
}


class Batch(dict):
    """One batch: FIELDS name -> tensor, read by name (batch["x"]). A dict, so a DataLoader
    pins and a worker pickles it as one."""

    @property
    def size(self):
        return len(self["y"])

    def to(self, device):
        return Batch({k: v.to(device, non_blocking=True) for k, v in self.items()})


def array_digest(arrays):
    """sha256 over named arrays (name, dtype, shape and bytes of each, in name order): two
    users with the same digest trained on the same numbers."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(torch.as_tensor(arrays[name]).cpu().numpy()
                                 if torch.is_tensor(arrays[name]) else arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


class ArrayDataset(Dataset):
    """In-memory inputs, labels, a per-example target b (h's bias target, or an environment:
    the field named self.b, set by the dataset's spec) and the image-level bias label
    (bias_index, also kept as a NumPy array for analysis). Batches carry x, y, b's field,
    bias_label and index, each built with one tensor op (__getitems__), with no per-sample
    Python work."""

    def __init__(self, inputs, labels, bias_targets, bias_index, b="bias"):
        self.inputs = torch.as_tensor(np.ascontiguousarray(inputs))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.bias_targets = torch.as_tensor(np.ascontiguousarray(bias_targets))
        self.bias_index = np.asarray(bias_index, dtype=np.int64)
        self.b = b
        self.bias_labels = torch.from_numpy(self.bias_index.copy())
        self.positions = torch.arange(len(self.labels))

    def __len__(self):
        return len(self.labels)

    def subset(self, idx, train=True):
        """The examples at idx, in that order (served as this set serves them; train: an
        in-memory set has no training-only transform)."""
        part = copy.copy(self)
        rows = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        part.inputs, part.labels = self.inputs[rows], self.labels[rows]
        part.bias_targets, part.bias_index = self.bias_targets[rows], self.bias_index[rows.numpy()]
        part.bias_labels = torch.from_numpy(part.bias_index.copy())
        part.positions = torch.arange(len(rows))  # its own positions: index is within a set
        return part

    def digest(self):
        """sha256 of the exact arrays this set serves (inputs, labels, b, bias attribute)."""
        return array_digest({"inputs": self.inputs, "labels": self.labels,
                             "bias_targets": self.bias_targets, "bias_index": self.bias_index})

    @property
    def input_shape(self):
        return tuple(self._inputs(torch.zeros(1, dtype=torch.long)).shape[1:])

    def _inputs(self, idx):
        return self.inputs[idx]

    def __getitems__(self, indices):
        """The Batch for a list or tensor of indices, or a slice (views, no copy)."""
        idx = indices if isinstance(indices, slice) else torch.as_tensor(indices,
                                                                          dtype=torch.long)
        if (not isinstance(idx, slice) and len(idx) == len(self)
                and torch.equal(idx, torch.arange(len(self), device=idx.device))):
            idx = slice(None)  # the whole set in order (full batch): views, not a copy per step
        return Batch({"x": self._inputs(idx), "y": self.labels[idx],
                      self.b: self.bias_targets[idx].long(),
                      "bias_label": self.bias_labels[idx], "index": self.positions[idx]})

    def __getitem__(self, i):
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def to(self, device):
        """Move every tensor the dataset holds (inputs, labels, b, normalisation) to device."""
        for name, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
        return self


class ColorImageDataset(ArrayDataset):
    """uint8 NHWC colour images, normalised per batch; --grayscale averages the channels first
    (the paper's 'Gray' oracle sees the same images without colour)."""

    def __init__(self, images, labels, bias_targets, bias_index, mean, std, grayscale=False,
                 b="bias"):
        super().__init__(images, labels, bias_targets, bias_index, b)
        self.grayscale = grayscale
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def digest(self):
        """The stored images' digest plus what is done to them when served (grayscale, the
        normalisation)."""
        return array_digest({"stored": np.frombuffer(super().digest().encode(), np.uint8),
                             "grayscale": np.array(bool(self.grayscale)),
                             "mean": self.mean, "std": self.std})

    def _inputs(self, idx):
        x = self.inputs[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if self.grayscale:
            x = x.mean(1, keepdim=True).expand_as(x)
        return (x - self.mean) / self.std


def split_validation(train, fraction, seed):
    """(train, validation): a seeded `fraction` of the training examples held out for
    test-free model selection (--val_fraction). Drawn uniformly from the training set, the
    validation set is biased as the training set is."""
    order = np.random.default_rng(seed).permutation(len(train))
    held = int(round(fraction * len(train)))
    if not 0 < held < len(train):
        raise UserError(f"--val_fraction {fraction} of {len(train)} training examples holds "
                        f"out {held}: pick a fraction that leaves examples on both sides")
    return train.subset(np.sort(order[held:])), train.subset(np.sort(order[:held]), train=False)


def _batch_passthrough(batch):
    """collate_fn for datasets that already return whole batches from __getitems__."""
    return batch


class EpochSampler(Sampler):
    """The training order of an epoch: it depends only on (seed, epoch) and the method's
    sampling, so a resumed run sees the same order, and set_start skips its first indices, to
    continue an epoch from the middle.
    - plain: a shuffle (or the stored order, shuffle=False). Under DistributedDataParallel each
      of `world` ranks takes every world-th index of the same permutation (padded to equal
      shares, like DistributedSampler).
    - a method's sampling (set_sampling, Method.sampling): {"weights": w} draws n examples with
      replacement, each with probability proportional to its w (GroupDRO's group-balanced
      sampling); {"copies": c} serves example i c_i times, shuffled (JTT's upsampling), an
      epoch of sum(c) examples.
    - envs given: each consecutive block of n_envs * per_env indices holds per_env examples of
      every environment (AND-mask's training batches)."""

    def __init__(self, n, seed, rank=0, world=1, shuffle=True, envs=None, per_env=0):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch, self.start, self.sampling = 0, 0, None
        self.share = -(-n // world)  # ceil: this rank's indices per epoch
        self.groups, self.per_env = None, per_env
        if envs is not None:
            self.groups = [np.flatnonzero(envs == e) for e in np.unique(envs)]
            self.share = min(len(g) for g in self.groups) // per_env * per_env * len(self.groups)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def set_start(self, start):
        self.start = start

    def set_sampling(self, sampling):
        """The method's sampling for the epochs to come (None: a plain shuffle)."""
        if sampling is not None and self.groups is not None:
            raise UserError("this dataset's batches are balanced by environment; a method "
                            "that samples its own examples cannot run on it")
        self.sampling = sampling
        size = self.n if sampling is None or "weights" in sampling else int(
            sampling["copies"].sum())
        self.share = -(-size // self.world)

    def _drawn(self, gen):
        """The epoch's examples before the rank split: a permutation, or the method's draw."""
        if self.sampling is None:
            return torch.randperm(self.n, generator=gen) if self.shuffle else torch.arange(self.n)
        if "weights" in self.sampling:
            w = torch.as_tensor(self.sampling["weights"], dtype=torch.float64).cpu()
            return torch.multinomial(w, self.n, replacement=True, generator=gen)
        copies = torch.as_tensor(self.sampling["copies"], dtype=torch.long).cpu()
        served = torch.repeat_interleave(torch.arange(self.n), copies)
        return served[torch.randperm(len(served), generator=gen)]

    def _order(self):
        """This rank's indices for the whole epoch."""
        if self.groups is not None:
            rng = np.random.default_rng([self.seed, self.epoch])
            shuffled = [rng.permutation(g) for g in self.groups]
            steps = self.share // (self.per_env * len(self.groups))
            return [i for k in range(steps) for g in shuffled
                    for i in g[k * self.per_env:(k + 1) * self.per_env].tolist()]
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = self._drawn(gen)
        if self.world > 1:
            order = torch.cat([order, order[:self.share * self.world - len(order)]])
            order = order[self.rank::self.world]
        return order.tolist()

    def __iter__(self):
        return iter(self._order()[self.start:])

    def __len__(self):
        return max(self.share - self.start, 0)


def first_n(n, *arrays):
    """The first n rows of each array (all of them when n is 0 or None): --max_*_samples."""
    return [a[:n] if n else a for a in arrays]


def make_loader(dataset, batch_size, train, seed, num_workers, device, balanced_envs=False,
                rank=0, world=1, drop_last=False):
    """DataLoader over whole-batch datasets. batch_size 0 = the whole set in one batch (IRM's
    full-batch training); with balanced_envs, batch_size counts examples per environment.
    Under DistributedDataParallel batch_size is the global batch, split evenly over ranks.
    drop_last (training only) drops a final partial batch, as ImageNet-style training does:
    a batch of one cannot train BatchNorm on small feature maps. (The fast path serves an
    in-memory dataset's batches from the device instead: Runtime.loader.)"""
    if balanced_envs and train:
        sampler = EpochSampler(len(dataset), seed, envs=dataset.bias_targets.numpy(),
                               per_env=batch_size)
        batch_size *= len(sampler.groups)
    elif train:
        # a full batch is the same mean in any order: keep the stored order
        sampler = EpochSampler(len(dataset), seed, rank, world, shuffle=bool(batch_size))
        batch_size = (batch_size or len(dataset)) // world
    else:
        sampler, batch_size = None, batch_size or len(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=num_workers, collate_fn=_batch_passthrough,
                      pin_memory=device.type == "cuda", drop_last=drop_last and train,
                      persistent_workers=num_workers > 0)
