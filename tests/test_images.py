"""Real-image benchmarks on generated image folders (small JPEGs of known class and brightness)
and the authors' real Dogs-and-Cats lists from ../shared."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fetch_data
import image_datasets as imd
import main as cli
import methods
import network
from utils import BadInput, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_LISTS = os.path.join(ROOT, "..", "shared", "data", "dogs_and_cats")
LEVELS = {imd.DARK: 45, imd.BRIGHT: 210, "mid": 128}  # mean grey level of generated images


def jpeg(path, level, vertical, rng, size=(72, 64)):
    """A striped image (the 'class': stripe direction) at a given mean brightness."""
    w, h = size
    stripes = (np.arange(w) // 8 % 2) if vertical else (np.arange(h) // 8 % 2)[:, None]
    base = np.broadcast_to(stripes * 40 - 20, (h, w)).astype(float) + level
    rgb = np.clip(base[..., None] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rgb).save(path, quality=90)


def make_dogs_cats(root, per_cell=10, unlisted=6, seed=0):
    """<root>/dogs_vs_cats/{images,lists}: per_cell images per (animal, colour), plus unlisted
    mid-brightness ones. Cats have horizontal stripes, dogs vertical."""
    rng = np.random.default_rng(seed)
    images = os.path.join(imd.dogs_cats_dir(root), "images")
    lists = {imd.BRIGHT: [], imd.DARK: []}
    k = 0
    for animal in ("cat", "dog"):
        for bias in (imd.DARK, imd.BRIGHT, "mid"):
            for _ in range(per_cell if bias != "mid" else unlisted // 2):
                name = f"{animal}.{k}.jpg"
                k += 1
                jpeg(os.path.join(images, name), LEVELS[bias], animal == "dog", rng)
                if bias != "mid":
                    lists[bias].append(name)
    lists_dir = os.path.join(imd.dogs_cats_dir(root), "lists")
    os.makedirs(lists_dir)
    for bias, fname in ((imd.BRIGHT, "list_bright.txt"), (imd.DARK, "list_dark.txt")):
        with open(os.path.join(lists_dir, fname), "w") as fh:
            fh.write("\n".join(lists[bias]) + "\n")
    return lists


def make_imdb(root, seed=0):
    """<root>/imdb_face/{images,manifests}: faces of both genders at ages across the bins."""
    rng = np.random.default_rng(seed)
    base = imd.imdb_dir(root)
    ages = [15, 22, 27, 33, 42, 47, 55, 66]
    for split, copies in (("train", (3, 3)), ("test", (2, 3))):  # test: more men than women
        rows = ["path,gender,age"]
        for gender in (0, 1):
            for age in ages:
                for c in range(copies[gender]):
                    rel = f"{gender}{age % 10}/{split}_{gender}_{age}_{c}.jpg"
                    jpeg(os.path.join(base, "images", rel), 60 + 2 * age, gender == 1, rng)
                    rows.append(f"{rel},{gender},{age}")
        os.makedirs(os.path.join(base, "manifests"), exist_ok=True)
        with open(os.path.join(base, "manifests", f"{split}.csv"), "w") as fh:
            fh.write("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images"))
    make_dogs_cats(root)
    make_imdb(root)
    return root


def args_for(root, *extra):
    _, args = cli.parse_args(["--data_root_base", root, "--image_size", "32", *extra])
    args.num_workers = 0
    return args


def cells(ds):
    return sorted(zip(ds.labels.tolist(), ds.bias_index.tolist()))


def count(ds):
    out = {}
    for cell in cells(ds):
        out[cell] = out.get(cell, 0) + 1
    return out


# --------------------------------------------------------------------------- splits
@pytest.mark.parametrize("split", ["TB1", "TB2"])
def test_tb_splits_have_the_paper_composition(image_root, split):
    sets = imd.dogs_cats_datasets(args_for(image_root, "--config", "configs/dogs_cats.yaml",
                                           "--bias_split", split, "--holdout_fraction", "0.2"))
    C, D, dark, bright = imd.CAT, imd.DOG, imd.DARK, imd.BRIGHT
    inside = {(C, dark), (D, bright)} if split == "TB1" else {(C, bright), (D, dark)}
    outside = {(C, dark), (C, bright), (D, dark), (D, bright)} - inside
    assert count(sets["train"]) == {cell: 8 for cell in inside}      # 10 minus 2 held out
    assert count(sets["test"]) == {cell: 10 for cell in outside}     # the whole opposite set
    assert count(sets["mixed"]) == {cell: 2 for cell in inside | outside}  # balanced
    assert not set(sets["train"].paths) & set(sets["mixed"].paths)  # held out means unseen
    batch = sets["train"].__getitems__([0, 1])
    x, y, b = batch["x"], batch["y"], batch["bias"]
    assert x.shape == (2, 3, 32, 32) and y.dtype == b.dtype == torch.int64


def test_authors_lists_give_the_published_tb_sizes():
    rows = imd.dogs_cats_rows("/nonexistent", SHARED_LISTS)
    y, b = np.array([r["y"] for r in rows]), np.array([r["b"] for r in rows])
    assert len(rows) == 8385 + 8400
    assert ((y == imd.CAT) & (b == imd.BRIGHT)).sum() == 3086
    assert ((y == imd.DOG) & (b == imd.BRIGHT)).sum() == 5299
    assert ((y == imd.CAT) & (b == imd.DARK)).sum() == 4748
    assert ((y == imd.DOG) & (b == imd.DARK)).sum() == 3652
    assert imd.in_bias_pattern(y, b, "TB1").sum() == 4748 + 5299  # dark cats + bright dogs
    assert imd.in_bias_pattern(y, b, "TB2").sum() == 3086 + 3652  # bright cats + dark dogs


@pytest.mark.parametrize("split", ["EB1", "EB2"])
@pytest.mark.parametrize("task", ["gender", "age"])
def test_eb_splits_have_the_paper_composition(image_root, split, task):
    sets = imd.imdb_face_datasets(args_for(image_root, "--config", f"configs/imdb_{task}.yaml",
                                           "--bias_split", split))
    y_key, b_key = imd.IMDB_TASKS[task]
    for name, ds in sets.items():
        rows = [dict(zip((y_key, b_key), cell)) for cell in cells(ds)]
        assert all(r.get("gender", 0) in (0, 1) and 0 <= r.get("age_bin", 0) < 12 for r in rows)
    # training: EB1 = women 0-29 + men 40+ (EB2 the reverse); nobody aged 30-39
    women_young = split == "EB1"
    for path in sets["train"].paths:
        gender, age = map(int, os.path.basename(path).split("_")[1:3])
        assert "train_" in path and not 30 <= age < 40
        assert (age < 30) == ((gender == imd.FEMALE) == women_young)
    # unbiased test: every age class holds as many women as men
    test = [os.path.basename(p).split("_")[1:3] for p in sets["test"].paths]
    by_age = {}
    for gender, age in test:
        by_age.setdefault(imd.age_bin(int(age)), []).append(int(gender))
    assert len(by_age) == 8 and all(g.count(0) == g.count(1) == 2 for g in by_age.values())
    # opposite: test images in the other split's pattern
    for path in sets["opposite"].paths:
        gender, age = map(int, os.path.basename(path).split("_")[1:3])
        assert "test_" in path and (age < 30) == ((gender == imd.FEMALE) != women_young)
    if task == "age":
        assert sets["train"].labels.max() < 12 and set(sets["train"].bias_index) == {0, 1}


def test_age_bins_follow_the_edges():
    assert [imd.age_bin(a) for a in (0, 19.9, 20, 29, 30, 45, 69, 70, 100)] == \
        [0, 0, 1, 2, 3, 6, 10, 11, 11]


# --------------------------------------------------------------------------- --make_lists
def test_make_lists_separates_bright_from_dark_and_reports_agreement(image_root, tmp_path,
                                                                     capsys):
    root = str(tmp_path)
    truth = make_dogs_cats(root, per_cell=10, unlisted=6, seed=1)
    fetch_data.main(["dogs_cats", "--data_root_base", root, "--make_lists", "--workers", "2"])
    out = capsys.readouterr().out
    derived = os.path.join(imd.dogs_cats_dir(root), "lists_derived")
    bright = open(os.path.join(derived, "list_bright.txt")).read().split()
    dark = open(os.path.join(derived, "list_dark.txt")).read().split()
    n = 46  # 40 listed + 6 mid-brightness images
    assert len(dark) == round(n * 8400 / 25000) and len(bright) == round(n * 8385 / 25000)
    assert set(bright) <= set(truth[imd.BRIGHT]) and set(dark) <= set(truth[imd.DARK])
    assert "of their 20 bright images we list 75.0% as bright, 0.0% as the opposite" in out
    assert f"--dogs_cats_lists {derived}" in out


def test_fetch_dogs_cats_copies_lists_and_says_what_to_do_without_kaggle(tmp_path, monkeypatch):
    root = str(tmp_path)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no_kaggle"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached `kaggle auth login` either
    with pytest.raises(UserError, match="no Kaggle API token found .*kaggle.json"):
        fetch_data.fetch_dogs_cats(fetch_data_args(root, lists_from=SHARED_LISTS))
    # with the images present, only the lists are placed
    jpeg(os.path.join(imd.dogs_cats_dir(root), "images", "cat.0.jpg"), 100, False,
         np.random.default_rng(0))
    fetch_data.fetch_dogs_cats(fetch_data_args(root, lists_from=SHARED_LISTS))
    placed = os.path.join(imd.dogs_cats_dir(root), "lists", "list_dark.txt")
    assert open(placed).read() == open(os.path.join(SHARED_LISTS, "list_dark.txt")).read()


def fetch_data_args(root, **kw):
    base = dict(data_root_base=root, zip_from=None, lists_from=None, make_lists=False,
                workers=1)
    import argparse
    return argparse.Namespace(**{**base, **kw})


def test_imdb_manifests_from_the_authors_metadata_format(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    labels = {b"01/a.jpg": {"age": 25, "gender": 0}, b"01/b.jpg": {"age": 61.0, "gender": 1},
              b"02/c.jpg": {"age": float("nan"), "gender": 1}}
    np.save(meta / "imdb_age_gender.npy", labels, allow_pickle=True)
    np.save(meta / "imdb_split.npy", {"train_list": ["01/a.jpg", "02/c.jpg"],
                                      "test_list": ["01/b.jpg"]}, allow_pickle=True)
    fetch_data.write_imdb_manifests(str(meta), str(tmp_path / "manifests"))
    assert (tmp_path / "manifests" / "train.csv").read_text() == "path,gender,age\n01/a.jpg,0,25\n"
    rows = imd.read_manifest(str(tmp_path / "manifests" / "test.csv"), "/img")
    assert rows[0]["path"] == "/img/01/b.jpg" and rows[0]["age_bin"] == 9


# --------------------------------------------------------------------------- malformed input
def test_list_naming_a_missing_file_names_the_list_and_line(image_root, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    src = os.path.join(imd.dogs_cats_dir(image_root), "lists")
    (lists / "list_bright.txt").write_text(open(os.path.join(src, "list_bright.txt")).read())
    (lists / "list_dark.txt").write_text(open(os.path.join(src, "list_dark.txt")).read()
                                         + "cat.999.jpg\n")
    with pytest.raises(UserError, match=r"list_dark\.txt:21: image .*cat\.999\.jpg does not exist"):
        imd.dogs_cats_datasets(args_for(image_root, "--dataset_name", "DogsCats",
                                        "--dogs_cats_lists", str(lists)))


def write_manifest(folder, text):
    os.makedirs(folder / "imdb_face" / "manifests", exist_ok=True)
    for name in ("train.csv", "test.csv"):
        (folder / "imdb_face" / "manifests" / name).write_text(text)
    return str(folder)


@pytest.mark.parametrize("text, message", [
    ("path,gender\n01/a.jpg,0\n", r"train\.csv:1: missing column\(s\) age"),
    ("path,gender,age\n01/a.jpg,0,31\n01/b.jpg,1,forty\n", r"train\.csv:3: age 'forty'"),
    ("path,gender,age\n01/a.jpg,m,31\n", r"train\.csv:2: gender 'm' must be 0"),
])
def test_malformed_manifest_names_file_and_line(tmp_path, text, message):
    root = write_manifest(tmp_path, text)
    with pytest.raises(UserError, match=message):
        imd.imdb_face_datasets(args_for(root, "--dataset_name", "IMDBFace"))


def broken_copy(image_root, tmp_path, how):
    """A copy of the generated Dogs-and-Cats data with one training image damaged."""
    import shutil
    root = tmp_path / "data"
    shutil.copytree(imd.dogs_cats_dir(image_root), imd.dogs_cats_dir(str(root)))
    victim = os.path.join(imd.dogs_cats_dir(str(root)), "images", "cat.0.jpg")  # a dark cat
    data = open(victim, "rb").read()
    with open(victim, "wb") as fh:
        fh.write(data[:len(data) // 3] if how == "truncated" else b"not an image at all")
    return str(root), victim


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_unreadable_image_stops_with_its_name_or_is_skipped(image_root, tmp_path, capsys, how):
    root, victim = broken_copy(image_root, tmp_path, how)
    argv = ["--config", "configs/dogs_cats.yaml", "--data_root_base", root, "--device", "cpu",
            "--image_size", "32", "--epochs", "1", "--batch_size", "4", "--num_workers", "1",
            "--method", "baseline", "--output_dir", str(tmp_path / "out"), "--holdout_fraction",
            "0"]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv + ["--experiment_name", "stop"])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert f"cannot read image {victim} (listed at " in err and "list_dark.txt:1)" in err
    assert "--skip_bad_images" in err and "--resume" in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "out" / "stop" / "checkpoints" / "last.pth")
    cli.main(argv + ["--experiment_name", "skip", "--skip_bad_images"])
    out = capsys.readouterr().out
    assert f"skipping unreadable image {victim}" in out and "skipped 1 of 40 images" in out


def test_bad_image_error_from_a_worker_keeps_only_the_message():
    err = BadInput("Caught BadInput in DataLoader worker process 0.\nOriginal Traceback (most "
                   "recent call last):\n  File \"x.py\", line 1\nutils.BadInput: cannot read a.jpg")
    assert str(err) == "cannot read a.jpg"


# --------------------------------------------------------------------------- networks, losses
@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_resnet18_split_composes_to_the_whole_network(split):
    torch.manual_seed(0)
    f = network.build_network("resnet18_f", resnet_split=split)
    g = network.build_network("resnet18_g", resnet_split=split, num_main_classes=2)
    h = network.build_network("resnet18_h", resnet_split=split, num_bias_classes=12)
    x = torch.randn(2, 3, 64, 64)
    feat = f(x)
    assert feat.shape[1] == network.RESNET18_WIDTHS[split]
    assert g(feat).shape == (2, 2) and h(feat).shape == (2, 1, 12)
    # f then g runs every ResNet-18 stage once: 4 stages of 2 blocks, 60 conv/bn/fc tensors
    n_params = sum(1 for _ in f.parameters()) + sum(1 for _ in g.parameters())
    from torchvision.models import resnet18
    assert n_params == sum(1 for _ in resnet18().parameters())


def test_pretrained_offline_says_where_the_weights_go(monkeypatch):
    from torchvision.models import ResNet18_Weights

    def offline(*a, **k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    network._imagenet_resnet18_state.cache_clear()
    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(UserError, match=r"hub/checkpoints/resnet18-f37072fd\.pth.*--pretrained"):
        network.build_network("resnet18_f", pretrained=True)
    network._imagenet_resnet18_state.cache_clear()


def test_lnl_losses_take_an_image_level_bias_target():
    torch.manual_seed(0)
    logits, b = torch.randn(6, 1, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    expect = torch.nn.functional.cross_entropy(logits[:, 0], b)
    assert torch.allclose(methods.bias_cross_entropy(logits, b), expect)
    assert methods.bias_accuracy(logits, b) == (logits[:, 0].argmax(1) == b).float().mean()
    p = logits.softmax(2)
    assert torch.allclose(methods.negative_entropy(logits), (p * p.log()).sum(2).mean())


# --------------------------------------------------------------------------- end to end
def test_two_epoch_resnet18_run_trains_checkpoints_and_tests(image_root, tmp_path):
    out = str(tmp_path)
    common = ["--config", "configs/dogs_cats.yaml", "--data_root_base", image_root,
              "--device", "cpu", "--image_size", "64", "--batch_size", "8", "--epochs", "2",
              "--output_dir", out, "--num_workers", "2", "--save_every", "1"]
    acc = cli.main(common + ["--method", "lnl", "--experiment_name", "lnl"])
    exp = os.path.join(out, "lnl")
    assert sorted(os.listdir(os.path.join(exp, "checkpoints"))) == \
        ["epoch_0001.pth", "epoch_0002.pth", "last.pth"]
    rows = [json.loads(l) for l in open(os.path.join(exp, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss_cls"]) and np.isfinite(r["loss_bias"]) for r in rows)
    assert {"test_acc", "mixed_acc"} <= set(rows[-1]) and 0.0 <= acc <= 1.0
    assert cli.main(common + ["--mode", "test", "--experiment_name", "lnl"]) == acc
    pred = np.load(os.path.join(exp, "test_predictions.npy"))
    summary = json.load(open(os.path.join(exp, "test_predictions.json")))
    assert np.array(summary["confusion_bias"]).shape == (2, 2) and len(pred["true_label"]) == 20


WRAPPERS = {"run_dogs_cats_tb1.sh": ("dogs_cats", "TB1"), "run_dogs_cats_tb2.sh": ("dogs_cats", "TB2"),
            "run_imdb_eb1_gender.sh": ("imdb_gender", "EB1"),
            "run_imdb_eb2_gender.sh": ("imdb_gender", "EB2"),
            "run_imdb_eb1_age.sh": ("imdb_age", "EB1"), "run_imdb_eb2_age.sh": ("imdb_age", "EB2")}


def test_every_real_image_wrapper_runs_its_benchmark_and_split(tmp_path):
    """The six wrappers only choose a benchmark and a split for scripts/run_real_images.sh,
    which launches those runs of the real_images plan (scripts/launch.py): each wrapper runs
    here with a stand-in PYTHON that records its arguments (no torch start-up), and the runs
    its --only names are the two-stage recipe's, LNL from the baseline's last checkpoint; the
    shared script runs for real in the next test."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import launch
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
    stub.chmod(0o755)
    for name, (bench, split) in WRAPPERS.items():
        calls = tmp_path / f"{name}.calls"
        env = dict(os.environ, PYTHON=str(stub), CALLS=str(calls), DEVICE="cpu",
                   OUTPUT_DIR=str(tmp_path), EPOCHS="1")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", name)], env=env, check=True,
                       capture_output=True, timeout=60)
        started, report = calls.read_text().splitlines()
        args = started.split()
        assert args[:5] == ["scripts/launch.py", "--plan", "real_images", "--seeds", "0"]
        only = args[args.index("--only") + 1]
        assert only == f"{bench}_{split}_seed0_*" and "--epochs 1 --device cpu" in started
        assert report.startswith("scripts/results.py table") and only in report
        todo, _ = launch.commands(launch.parse_args(
            ["--plan", "real_images", "--only", only, "--epochs", "1", "--device", "cpu",
             "--output_dir", str(tmp_path)]))
        base, lnl = (" ".join(c.argv) for c in todo)
        assert [c.name for c in todo] == [f"{bench}_{split}_seed0_baseline",
                                          f"{bench}_{split}_seed0_lnl"]
        stage = f"configs/{bench}.yaml --bias_split {split}"
        assert stage in base and stage in lnl and "--seed 0 " in base
        assert "--method baseline --lr 0.01" in base and "--method lnl --lr 0.001" in lnl
        assert f"--init_checkpoint {tmp_path}/{bench}_{split}_seed0_baseline/checkpoints/" \
               "last.pth" in lnl and todo[1].after == todo[0].name


def test_real_image_script_runs_baseline_then_lnl(image_root, tmp_path):
    """scripts/run_real_images.sh end to end on IMDB-Face's age task (12 classes, bias =
    gender), the benchmark no in-process test trains; Dogs and Cats trains in-process above."""
    env = dict(os.environ, PYTHON=sys.executable, DEVICE="cpu", DATA_ROOT=image_root,
               OUTPUT_DIR=str(tmp_path), EPOCHS="1", IMAGE_SIZE="32", BATCH="16",
               EXTRA="--num_workers 0")
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_imdb_eb1_age.sh")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout.splitlines()
    assert "2 of 2 run(s) finished" in proc.stdout
    header = next(l for l in table if l.startswith("| variant"))
    assert "test_acc" in header and "opposite_acc" in header, proc.stdout
    for label in ("Baseline", "LNL"):  # each stage's record, one run each
        assert any(l.startswith(f"| {label} |") for l in table), proc.stdout


def test_too_few_classes_for_the_labels_is_a_clear_error(image_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", "configs/imdb_age.yaml", "--num_main_classes", "2",
                  "--data_root_base", image_root, "--device", "cpu", "--image_size", "32",
                  "--output_dir", str(tmp_path)])
    assert exc.value.code == 1
    assert "labels up to 10 but --num_main_classes is 2" in capsys.readouterr().err


def test_fetch_imdb_face_offline_says_what_to_do_and_links_local_crops(tmp_path, monkeypatch):
    import gdown

    def offline(*a, **k):
        raise OSError("Failed to establish a new connection")
    monkeypatch.setattr(gdown, "download", offline)
    args = fetch_data_args(str(tmp_path), metadata_from=None, images_from=None)
    with pytest.raises(UserError, match=r"(?s)1ZFZ2tUjq3BBRw3rcXB0LkBvaqKD4_8WK.*--metadata_from"):
        fetch_data.fetch_imdb_face(args)
    meta, crops = tmp_path / "meta", tmp_path / "crops"
    meta.mkdir(), crops.mkdir()
    np.save(meta / "imdb_age_gender.npy", {b"01/a.jpg": {"age": 30, "gender": 1}})
    np.save(meta / "imdb_split.npy", {"train_list": ["01/a.jpg"], "test_list": []})
    fetch_data.fetch_imdb_face(fetch_data_args(str(tmp_path), metadata_from=str(meta),
                                               images_from=str(crops)))
    base = imd.imdb_dir(str(tmp_path))
    assert os.path.realpath(os.path.join(base, "images")) == str(crops)
    assert open(os.path.join(base, "manifests", "train.csv")).read().endswith("01/a.jpg,1,30\n")
