import os

import numpy as np
import pytest
import torch

import andmask_datasets
import colored_mnist as cm
import data_handler as dh
import fetch_data
from dataset_specs import build_datasets
from utils import UserError


def test_color_bin_target_on_hand_made_pixels():
    img = np.zeros((1, 28, 28, 3), np.uint8)
    # nearest 28->14 keeps the centre pixel (2i+1, 2j+1), as PIL does
    img[0, 1, 1] = (0, 31, 32)       # -> ignore, bin 0, bin 1
    img[0, 1, 3] = (255, 224, 223)   # -> bins 7, 7, 6
    img[0, 0, 0] = (255, 255, 255)   # even position: dropped by the resize
    t = cm.color_bin_target(img)
    assert t.shape == (1, 3, 14, 14) and t.dtype == np.uint8
    assert t[0, :, 0, 0].tolist() == [dh.IGNORE_INDEX, 0, 1]
    assert t[0, :, 0, 1].tolist() == [7, 7, 6]
    # everything else is background: ignored on every channel
    mask = np.ones((14, 14), bool)
    mask[0, 0] = mask[0, 1] = False
    assert (t[0][:, mask] == dh.IGNORE_INDEX).all()


def test_paint_intensity_keeps_background_black_and_scales_colour():
    gray = np.zeros((1, 28, 28), np.uint8)
    gray[0, 5, 5], gray[0, 6, 6] = 255, 128
    out = cm.paint(gray, np.array([[1.0, 0.5, 0.0]]), "intensity")
    assert out[0, 5, 5].tolist() == [255, 128, 0]
    assert out[0, 6, 6].tolist() == [128, 64, 0]
    assert out.sum() == 255 + 128 + 128 + 64


def test_paint_mask_puts_one_flat_colour_on_the_stroke_and_nothing_elsewhere():
    gray = np.zeros((1, 28, 28), np.uint8)
    gray[0, 5, 5], gray[0, 6, 6], gray[0, 7, 7] = 255, 128, 127  # 127: an edge, not stroke
    out = cm.paint(gray, np.array([[1.0, 0.5, 0.2]]))
    assert out[0, 5, 5].tolist() == out[0, 6, 6].tolist() == [255, 128, 51]
    assert out[0, 7, 7].tolist() == [0, 0, 0]
    assert out.sum() == 2 * (255 + 128 + 51)


def test_mask_painting_gives_h_a_target_of_colour_alone(mnist_root):
    """With the colour flat on the stroke, every non-ignored pixel of an image has the same
    colour bins (the image's colour); scaled by intensity, edges add other bins (shape)."""
    mnist = cm.load_mnist(mnist_root)
    mnist = {k: v[:300] for k, v in mnist.items()}
    for rule, one_bin in (("mask", True), ("intensity", False)):
        data = cm.build_colored_mnist(mnist, 0.02, 0, rule=rule)
        target = cm.color_bin_target(data["train_image"])
        bins_per_channel = [len(set(t[c][t[c] != dh.IGNORE_INDEX].tolist()))
                            for t in target for c in range(3)]
        assert (max(bins_per_channel) == 1) == one_bin, (rule, max(bins_per_channel))


def test_every_palette_is_chromatic_and_the_default_has_no_zero_channel():
    for name, palette in cm.PALETTES.items():
        assert palette.shape == (10, 3) and len({tuple(c) for c in palette}) == 10, name
    authors = cm.PALETTES["authors"] * 255
    assert (authors.max(1) - authors.min(1) >= 30).all()  # no white or gray digit
    assert (authors.min(1) > 0).all()  # a zero channel would be background to h


def test_build_is_deterministic_in_data_seed(fake_mnist):
    a = cm.build_colored_mnist(fake_mnist, 0.02, data_seed=3)
    b = cm.build_colored_mnist(fake_mnist, 0.02, data_seed=3)
    c = cm.build_colored_mnist(fake_mnist, 0.02, data_seed=4)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["train_image"], c["train_image"])


def test_real_training_set_is_biased_and_test_set_is_not(mnist_root):
    data = cm.load_or_build_cmnist(mnist_root, 0.020, data_seed=0)
    for split in ("train", "test"):
        images = data[f"{split}_image"]
        assert images.shape[1:] == (28, 28, 3) and images.dtype == np.uint8
    colour_pred = lambda s: cm.nearest_colour_index(cm.stroke_colour(data[f"{s}_image"]),
                                                    cm.PALETTE)
    train_agree = (colour_pred("train") == data["train_label"]).mean()
    test_agree = (colour_pred("test") == data["test_label"]).mean()
    # chance is 0.1; not 1.0, as the jitter (sd 0.14 per channel) carries some colours nearer
    # another digit's mean (the authors' digits 1 and 3 are 0.16 apart)
    assert train_agree >= 0.80, train_agree
    assert 0.07 <= test_agree <= 0.13, test_agree
    # the test set's stored colour index is the colour it was painted with
    assert (colour_pred("test") == data["test_color_index"]).mean() >= 0.80
    # and that index is spread evenly over the ten colours, whatever the digit
    counts = np.bincount(data["test_color_index"], minlength=10)
    assert counts.min() > 800


def test_weaker_bias_at_larger_variance(mnist_root):
    agree = []
    for var in (0.020, 0.050):
        data = cm.load_or_build_cmnist(mnist_root, var, data_seed=0)
        pred = cm.nearest_colour_index(cm.stroke_colour(data["train_image"][:10000]), cm.PALETTE)
        agree.append((pred == data["train_label"][:10000]).mean())
    assert agree[0] > agree[1] + 0.1


def test_cache_is_built_once(tmp_path, fake_mnist, monkeypatch):
    calls = []
    monkeypatch.setattr(cm, "load_mnist", lambda root: calls.append(root) or fake_mnist)
    a = cm.load_or_build_cmnist(str(tmp_path), 0.03, 1)
    b = cm.load_or_build_cmnist(str(tmp_path), 0.03, 1)
    assert len(calls) == 1
    assert os.path.exists(cm.cmnist_cache_path(str(tmp_path), 0.03, 1))
    assert np.array_equal(a["test_image"], b["test_image"])


def test_a_changed_cache_fails_its_digest_and_is_built_again(tmp_path, fake_mnist, monkeypatch,
                                                             capsys):
    calls = []
    monkeypatch.setattr(cm, "load_mnist", lambda root: calls.append(root) or fake_mnist)
    built = cm.load_or_build_cmnist(str(tmp_path), 0.03, 1)
    path = cm.cmnist_cache_path(str(tmp_path), 0.03, 1)
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    assert str(stored["sha256"]) == dh.array_digest({k: built[k] for k in cm.CMNIST_KEYS})
    stored["test_label"] = stored["test_label"].copy()
    stored["test_label"][0] = (stored["test_label"][0] + 1) % 10  # one label changed
    np.savez(path, **stored)
    assert cm.read_cmnist_cache(path) is None
    assert "do not match their stored sha256" in capsys.readouterr().out
    again = cm.load_or_build_cmnist(str(tmp_path), 0.03, 1)  # rebuilt, not trusted
    assert len(calls) == 2 and np.array_equal(again["test_label"], built["test_label"])


def test_a_runs_data_digest_names_its_exact_data(fake_mnist, monkeypatch, tmp_path):
    """The same flags give the same sets and the same digest; other data (another sigma^2,
    fewer examples, the grayscale oracle's inputs) another."""
    import records
    monkeypatch.setattr(cm, "load_mnist", lambda root: fake_mnist)
    root = str(tmp_path)
    digest = lambda **kw: records.data_digest(build_datasets(Args(data_root_base=root, **kw)))
    first = digest()
    assert first == digest() and len(first) == 64
    others = [digest(color_var=0.05), digest(max_train_samples=100), digest(grayscale=True)]
    assert len({first, *others}) == 4


class Args:
    dataset_name = "ColoredMNIST"
    cmnist_source = "ours"
    color_var = 0.02
    cmnist_paint = "mask"
    cmnist_palette = "authors"
    data_seed = 0
    max_train_samples = 0
    max_test_samples = 0
    grayscale = False
    env_from_bias = False
    output_dir = "./outputs"  # the cache goes there only when the data folder is read-only

    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_official_file_format_loads(tmp_path, fake_mnist):
    ours = cm.build_colored_mnist(fake_mnist, 0.02, 0)
    official = {"train_image": ours["train_image"], "train_label": ours["train_label"],
                "test_image": ours["test_image"], "test_label": ours["test_label"],
                "test_gray": fake_mnist["test_images"]}
    np.save(cm.official_cmnist_path(str(tmp_path), 0.02), official)
    sets = build_datasets(Args(cmnist_source="official", data_root_base=str(tmp_path)))
    train, test = sets["train"], sets["test"]
    assert len(train) == 200 and len(test) == 100
    batch = train.__getitems__(list(range(8)))
    x, y, b = batch["x"], batch["y"], batch["bias"]
    assert x.shape == (8, 3, 28, 28) and b.shape == (8, 3, 14, 14)
    assert y.tolist() == ours["train_label"][:8].tolist()
    # colour index of the test images is recovered from the training colours
    assert (test.bias_index == ours["test_color_index"]).mean() >= 0.8


def test_official_file_missing_names_the_fetch_command(tmp_path):
    with pytest.raises(UserError, match="fetch_data.py cmnist_official"):
        build_datasets(Args(cmnist_source="official", data_root_base=str(tmp_path)))


def test_missing_mnist_names_the_fetch_command(tmp_path):
    with pytest.raises(UserError, match="fetch_data.py mnist"):
        build_datasets(Args(data_root_base=str(tmp_path)))


def test_batches_are_x_y_b_and_shuffle_depends_on_epoch(tmp_path, fake_mnist):
    data = cm.build_colored_mnist(fake_mnist, 0.02, 0)
    ds = dh.ColorImageDataset(data["train_image"], data["train_label"],
                                cm.color_bin_target(data["train_image"]),
                                data["train_color_index"], cm.CMNIST_MEAN, cm.CMNIST_STD)
    loader = dh.make_loader(ds, 64, True, seed=1, num_workers=0, device=torch.device("cpu"))
    batch = next(iter(loader))
    x, y, b = batch["x"], batch["y"], batch["bias"]
    assert x.dtype == torch.float32 and x.shape == (64, 3, 28, 28)
    assert y.dtype == torch.int64 and b.dtype == torch.int64 and b.shape == (64, 3, 14, 14)
    order = lambda e: (loader.sampler.set_epoch(e), list(loader.sampler))[1]
    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(1)) == list(range(200))


def test_full_batch_is_the_whole_set_in_stored_order_without_a_copy():
    x = torch.randn(50, 4)
    ds = dh.ArrayDataset(x, np.arange(50) % 2, np.arange(50) % 3, np.zeros(50))
    loader = dh.make_loader(ds, 0, True, seed=1, num_workers=0, device=torch.device("cpu"))
    batch, = list(loader)
    bx, by = batch["x"], batch["y"]
    assert torch.equal(bx, ds.inputs) and bx.data_ptr() == ds.inputs.data_ptr()
    assert by.tolist() == (np.arange(50) % 2).tolist()
    part = ds.__getitems__([3, 1])  # any other selection is gathered as before
    assert torch.equal(part["x"], x[[3, 1]]) and part["x"].data_ptr() != ds.inputs.data_ptr()
    assert part["index"].tolist() == [3, 1]  # each example's own position


def test_grayscale_inputs_have_equal_channels_before_normalising(fake_mnist):
    data = cm.build_colored_mnist(fake_mnist, 0.02, 0)
    ds = dh.ColorImageDataset(data["train_image"], data["train_label"],
                                cm.color_bin_target(data["train_image"]), data["train_label"],
                                (0, 0, 0), (1, 1, 1), grayscale=True)
    x = ds.__getitems__([0, 1])["x"]
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(10))
    with pytest.raises(UserError, match="truncated"):
        cm.read_idx(str(path))


def test_fetch_from_folder_rejects_a_corrupt_file(tmp_path, mnist_root):
    src = tmp_path / "src"
    src.mkdir()
    raw = os.path.join(mnist_root, "MNIST", "raw")
    for name in os.listdir(raw):
        data = open(os.path.join(raw, name), "rb").read()
        if name.startswith("t10k-labels"):
            data = data[:-1] + bytes([(data[-1] + 1) % 256])
        (src / name).write_bytes(data)
    with pytest.raises(UserError, match="md5"):
        fetch_data.import_mnist(str(src), str(tmp_path / "dest"))
    with pytest.raises(SystemExit) as exc:
        fetch_data.main(["mnist", "--from", str(src), "--data_root_base", str(tmp_path / "d")])
    assert exc.value.code == 1


def test_two_imports_at_once_both_succeed(tmp_path, mnist_root, monkeypatch):
    """long_runs.py's two plans import MNIST at the same moment on a fresh clone: the second
    import runs while the first is between writing a file and renaming it into place."""
    src = os.path.join(mnist_root, "MNIST", "raw")
    dest = str(tmp_path / "dest")
    real_replace, nested = os.replace, []

    def replace_after_another_import(*args, **kwargs):
        if not nested:
            nested.append(True)
            fetch_data.import_mnist(src, dest)
        return real_replace(*args, **kwargs)

    monkeypatch.setattr(os, "replace", replace_after_another_import)
    fetch_data.import_mnist(src, dest)
    monkeypatch.undo()
    assert nested and sorted(os.listdir(os.path.join(dest, "MNIST", "raw"))) == sorted(
        os.listdir(src))
    assert cm.load_mnist(dest)["train_labels"].shape == (60000,)


def test_if_missing_imports_once_and_then_does_nothing(tmp_path, mnist_root, monkeypatch):
    """The one "is MNIST there, else fetch it" (the run scripts, the long-run driver and the
    lease all call fetch_data.py mnist --if_missing)."""
    src = os.path.join(mnist_root, "MNIST", "raw")
    argv = ["mnist", "--if_missing", "--from", src, "--data_root_base", str(tmp_path / "d")]
    fetch_data.main(argv)
    assert fetch_data.have_mnist(str(tmp_path / "d"))
    monkeypatch.setattr(fetch_data, "import_mnist", lambda *a: pytest.fail("imported again"))
    fetch_data.main(argv)


# ----------------------------------------------------------------------------- IRM Colored MNIST
def test_irm_environments_have_the_published_agreement_rates(mnist_root):
    envs, test = cm.build_irm_cmnist(cm.load_mnist(mnist_root), data_seed=0)
    digits = cm.load_mnist(mnist_root)["train_labels"]
    for (x, y, colour), e in zip(envs + [test], cm.IRM_TRAIN_ENVS + (cm.IRM_TEST_ENV,)):
        n = len(y)
        tol = 4 * np.sqrt(0.25 / n)  # four standard errors
        assert x.shape == (n, 2, 14, 14) and x.dtype == np.float32
        assert abs((colour == y).mean() - (1 - e)) < tol          # colour vs noisy label
        # the other channel is zeroed: colour 1 keeps channel 1 only
        assert (x[colour == 1, 0] == 0).all() and (x[colour == 0, 1] == 0).all()
    assert [len(e[1]) for e in envs] == [25000, 25000] and len(test[1]) == 10000
    # label noise: y agrees with (digit < 5) 75% of the time in the test environment
    clean = (digits[50000:] < 5).astype(np.int64)
    assert abs((test[1] == clean).mean() - 0.75) < 4 * np.sqrt(0.25 / 10000)


def test_irm_grayscale_sums_the_two_channels(mnist_root):
    sets = build_datasets(Args(dataset_name="IRMColoredMNIST", data_root_base=mnist_root,
                                  grayscale=True, max_train_samples=100, max_test_samples=50))
    assert sets["train"].input_shape == (1, 14, 14)
    b = sets["train"].__getitems__(list(range(100)))["env"]
    assert b.tolist().count(0) == b.tolist().count(1) == 50  # N / 2 from each environment
    assert set(sets["test"].bias_targets.tolist()) == {2}


# ----------------------------------------------------------------------------- spiral signatures
def spiral_args(**kw):
    base = dict(dataset_name="SpiralSignatures", n_envs=4, examples_per_env=256,
                spiral_dims=16, spiral_revolutions=3, spiral_test_examples=1000)
    base.update(kw)
    return Args(**base)


def test_spiral_signature_is_predictive_in_training_envs_and_not_at_test():
    sets = build_datasets(spiral_args())
    train, test = sets["train"], sets["test"]
    x, y, env = train.inputs.numpy(), train.labels.numpy(), train.bias_targets.numpy()
    for e in range(4):
        sig = x[env == e, 2:]
        direction = sig[y[env == e] == 1].mean(0)  # the env's signature
        pred = (sig @ direction > 0).astype(int)
        assert (pred == y[env == e]).all()
    # at test the signature is noise: no direction reads the label
    tx, ty = test.inputs.numpy(), test.labels.numpy()
    for e in range(4):
        direction = x[(env == e) & (y == 1), 2:].mean(0)
        acc = ((tx[:, 2:] @ direction > 0).astype(int) == ty).mean()
        assert abs(acc - 0.5) < 0.07
    # the spiral part is shared: same distribution of radii in train and test
    r = lambda a: np.sqrt((a[:, :2] ** 2).sum(1))
    assert abs(np.median(r(x)) - np.median(r(tx))) < 0.1


def test_env_balanced_sampler_gives_every_env_equal_share_per_batch():
    train = build_datasets(spiral_args())["train"]
    loader = dh.make_loader(train, 32, True, seed=0, num_workers=0,
                            device=torch.device("cpu"), balanced_envs=True)
    batches = list(loader)
    assert len(batches) == 256 // 32
    for batch in batches:
        b = batch["env"]
        assert torch.bincount(b, minlength=4).tolist() == [32] * 4


def test_env_from_bias_makes_b_the_colour_index(fake_mnist, monkeypatch, tmp_path):
    monkeypatch.setattr(cm, "load_mnist", lambda root: fake_mnist)
    sets = build_datasets(Args(data_root_base=str(tmp_path), env_from_bias=True))
    batch = sets["train"].__getitems__(list(range(20)))
    y, b = batch["y"], batch["env"]
    assert b.shape == (20,) and torch.equal(b, y)  # training colour = the digit's colour


# ----------------------------------------------------------------------------- CIFAR-10 random labels
def write_fake_cifar(root, n_train=50, n_test=20):
    import pickle
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{k}", n_train // 5) for k in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": (np.arange(n) % 10).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar_random_labels_mislabel_exactly_the_fraction(tmp_path):
    write_fake_cifar(tmp_path, n_train=200)
    sets = build_datasets(Args(dataset_name="CIFAR10RandomLabels", data_root_base=str(tmp_path),
                                  random_labels_fraction=0.25))
    train, mis = sets["train"], sets["mislabeled"]
    clean = np.arange(40) % 10  # each fake batch restarts its labels at 0
    clean = np.concatenate([clean] * 5)
    noisy = train.labels.numpy()
    assert (noisy != clean).sum() == len(mis) <= 50  # of 50 drawn, a few keep their label
    assert torch.equal(mis.labels, train.labels[mis.bias_targets])
    assert torch.equal(train.bias_targets, torch.arange(200))  # one environment per example
    assert sets["test"].input_shape == (3, 32, 32)


def test_random_labels_are_uniform_over_all_classes_including_the_true_one():
    """AND-mask authors' CIFAR-10 setup: a randomized label is uniform over all 10 classes, so
    it says nothing about the image (excluding the true class would leak it)."""
    labels = np.arange(50000) % 10
    noisy, randomized = andmask_datasets.randomize_labels(labels, 0.5, 10, np.random.default_rng(0))
    assert randomized.sum() == 25000 and (noisy[~randomized] == labels[~randomized]).all()
    drawn, true = noisy[randomized], labels[randomized]
    assert abs((drawn == true).mean() - 0.1) < 0.01  # 1/10 keep their label by chance
    counts = np.bincount(drawn, minlength=10)
    assert np.abs(counts / len(drawn) - 0.1).max() < 0.01
    for c in range(10):  # whatever the true class, every class is drawn about equally often
        assert np.abs(np.bincount(drawn[true == c], minlength=10) / (true == c).sum()
                      - 0.1).max() < 0.03


def test_cifar_missing_names_the_fetch_command(tmp_path):
    with pytest.raises(UserError, match="fetch_data.py cifar10"):
        build_datasets(Args(dataset_name="CIFAR10RandomLabels", data_root_base=str(tmp_path),
                               random_labels_fraction=0.1))


def test_data_card_draws_each_sigma_and_states_the_agreement(tmp_path, fake_mnist, monkeypatch):
    """scripts/data_card.py: one PNG per sigma^2 and card.json with the nearest-colour
    agreement, which the biased training set shows and the unbiased test set does not."""
    import json
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
    import data_card
    monkeypatch.setattr(cm, "load_mnist", lambda root: fake_mnist)
    assert data_card.main(["--sigmas", "0.020", "0.050", "--data_root", str(tmp_path / "d"),
                           "--out", str(tmp_path / "card"), "--per_digit", "3"]) == 0
    card = json.load(open(tmp_path / "card" / "card.json"))
    for sigma in ("0.020", "0.050"):
        png = tmp_path / "card" / f"card_var{sigma}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        figures = card["agreement"][sigma]
        assert figures["train"] > 0.5 > 0.3 > figures["test"]
    assert card["agreement"]["0.020"]["train"] >= card["agreement"]["0.050"]["train"]


def test_the_lists_never_write_through_a_planted_temp_link(tmp_path):
    """A link planted under the old fixed temp name (a commit can carry one) is never followed:
    the lists are written through unique temp files, the link's target untouched."""
    src, dest, outside = tmp_path / "src", tmp_path / "lists", tmp_path / "outside.txt"
    src.mkdir()
    dest.mkdir()
    outside.write_text("mine")
    for name in fetch_data.LIST_FILES:
        (src / name).write_text(f"{name}\n")
        os.symlink(outside, dest / f"{name}.tmp")
    fetch_data.fetch_lists(str(dest), str(src))
    assert outside.read_text() == "mine"
    assert all((dest / n).read_text() == f"{n}\n" for n in fetch_data.LIST_FILES)
    fetch_data.write_list(str(dest / "list_x.txt"), ["a.jpg"])
    assert (dest / "list_x.txt").read_text() == "a.jpg\n"


def rewritten(data, **changes):
    """A cache rewritten by hand with its digest recomputed: the digest alone cannot tell."""
    data = {**data, **changes}
    return {**data, "sha256": np.array(dh.array_digest({k: data[k] for k in cm.CMNIST_KEYS}))}


@pytest.mark.parametrize("case,said", [
    ("float_images", "images are float64"),
    ("three_images", "training set holds 3 images"),
    ("labels_99", "labels leave 0..9"),
    ("fifo", "not a plain file"),
    ("zip_bomb", "unpacks to"),
])
def test_a_cache_whose_digest_matches_is_still_checked_for_what_it_holds(
        case, said, tmp_path, fake_mnist, monkeypatch, capsys):
    """The stored digest sits in the same file: a rewritten cache with a fresh digest was
    trusted whatever it held (images x 1e6 trained silently, a 3-image training set was taken,
    a FIFO hung the run). Each is refused in one line and the data is built again."""
    calls = []
    monkeypatch.setattr(cm, "load_mnist", lambda root: calls.append(root) or fake_mnist)
    built = cm.load_or_build_cmnist(str(tmp_path), 0.03, 1)
    path = cm.cmnist_cache_path(str(tmp_path), 0.03, 1)
    data = {k: built[k] for k in cm.CMNIST_KEYS}
    os.remove(path)
    if case == "float_images":
        np.savez(path, **rewritten(data, train_image=data["train_image"] * 1e6))
    elif case == "three_images":
        np.savez(path, **rewritten(data, **{f"train_{k}": data[f"train_{k}"][:3]
                                            for k in ("image", "label", "color_index")}))
    elif case == "labels_99":
        np.savez(path, **rewritten(data, test_label=np.full_like(data["test_label"], 99)))
    elif case == "fifo":
        os.mkfifo(path)
    else:  # a small file that unpacks far past what a cache holds
        monkeypatch.setattr(cm, "CACHE_MAX_BYTES", 1 << 20)
        np.savez_compressed(path, **rewritten(data), padding=np.zeros(1 << 22, np.uint8))
        assert os.path.getsize(path) < 1 << 20
    assert cm.read_cmnist_cache(path) is None  # returns at once: a FIFO is never opened
    out = capsys.readouterr().out
    assert said in out and "is not used" in out
