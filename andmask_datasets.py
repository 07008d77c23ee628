"""The AND-mask paper's benchmarks (Parascandolo et al., ICLR 2021): the synthetic spiral
memorisation task (§5.1) and CIFAR-10 with randomized labels (§5.2)."""
import os
import pickle

import numpy as np

from data_handler import ColorImageDataset, ArrayDataset, first_n
from utils import UserError

# --------------------------------------------------------------------------- spiral signatures
def spiral_environment(n, n_dims, revolutions, signature, rng):
    """AND-mask's synthetic memorisation task (Parascandolo et al., ICLR 2021, §5.1): a 2-D
    spiral whose arm is the binary label (the shared mechanism), next to n_dims 'signature'
    inputs equal to signature * (2y - 1) (a per-environment shortcut), or pure noise when
    signature is None (the test environment)."""
    radii = rng.uniform(0.08, 1.0, n)
    y = rng.integers(0, 2, n)
    angles = 2 * revolutions * np.pi * radii + np.pi * y
    radii = radii + rng.uniform(-0.02, 0.02, n)
    spiral = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
    spiral /= spiral.std(axis=0)  # unit variance, like the signatures
    if signature is None:
        sig = rng.standard_normal((n, n_dims))
    else:
        sig = signature[None, :] * (2 * y[:, None] - 1)
    return np.hstack([spiral, sig]).astype(np.float32), y.astype(np.int64)


def spiral_datasets(args):
    """--n_envs training environments of --examples_per_env each, one test environment."""
    xs, ys, envs = [], [], []
    for e in range(args.n_envs):
        rng = np.random.default_rng([args.data_seed, e])
        signature = rng.standard_normal(args.spiral_dims)
        x, y = spiral_environment(args.examples_per_env, args.spiral_dims,
                                  args.spiral_revolutions, signature, rng)
        xs.append(x), ys.append(y), envs.append(np.full(len(y), e))
    rng = np.random.default_rng([args.data_seed, 10**6])
    tx, ty = spiral_environment(args.spiral_test_examples, args.spiral_dims,
                                args.spiral_revolutions, None, rng)
    x, y, env = np.concatenate(xs), np.concatenate(ys), np.concatenate(envs)
    test_env = np.full(len(ty), args.n_envs)
    return {"train": ArrayDataset(x, y, env, env), "test": ArrayDataset(tx, ty, test_env,
                                                                            test_env)}


# --------------------------------------------------------------------------- CIFAR-10 random labels
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MISLABELED = "mislabeled"  # the randomized examples' evaluation set (metrics.accuracy(name))


def load_cifar10(data_root_base):
    """CIFAR-10's python batches (as torchvision downloads them) -> train/test arrays."""
    folder = os.path.join(data_root_base, "cifar-10-batches-py")
    names = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, files in names.items():
        images, labels = [], []
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise UserError(f"CIFAR-10 not found: {path} is missing. Fetch it with "
                                "`python fetch_data.py cifar10 --data_root_base "
                                f"{data_root_base}`.")
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], np.int64))
        out[f"{split}_image"] = np.concatenate(images).transpose(0, 2, 3, 1)
        out[f"{split}_label"] = np.concatenate(labels)
    return out


def randomize_labels(labels, fraction, num_classes, rng):
    """Give a random fraction of examples a label drawn uniformly from all num_classes classes,
    as the AND-mask authors' CIFAR-10 run does (docs/references.md): about 1/num_classes of
    them keep their true label by chance. Drawing from the other classes only would make the
    'random' labels learnable from the image. Returns the new labels and the randomized mask."""
    randomized = np.zeros(len(labels), bool)
    randomized[rng.permutation(len(labels))[:int(round(fraction * len(labels)))]] = True
    noisy = np.where(randomized, rng.integers(0, num_classes, size=len(labels)), labels)
    return noisy, randomized


def cifar_random_labels_datasets(args):
    """CIFAR-10 with --random_labels_fraction of training labels randomized (AND-mask paper,
    §5.2). Each training example is its own environment (b = its index). Besides the test set,
    'mislabeled' evaluates the randomized examples whose label changed against their random
    labels: accuracy there measures memorisation alone (the true label scores 0)."""
    data = load_cifar10(args.data_root_base)
    rng = np.random.default_rng(args.data_seed)
    images, labels = first_n(args.max_train_samples, data["train_image"], data["train_label"])
    noisy, randomized = randomize_labels(labels, args.random_labels_fraction, 10, rng)
    mislabeled = randomized & (noisy != labels)
    timages, tlabels = first_n(args.max_test_samples, data["test_image"], data["test_label"])
    index = np.arange(len(noisy))
    make = lambda x, y, b: ColorImageDataset(x, y, b, b, CIFAR_MEAN, CIFAR_STD)
    sets = {"train": make(images, noisy, index),
            "test": make(timages, tlabels, np.zeros(len(tlabels), np.int64))}
    if mislabeled.any():
        sets[MISLABELED] = make(images[mislabeled], noisy[mislabeled], index[mislabeled])
    return sets
