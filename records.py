"""Self-describing run records: what results.json and TensorBoard keep about a finished run.

A run's results.json carries its final metrics, its full resolved configuration and its
provenance (git commit and whether the tree was dirty, torch/CUDA versions, the device actually
used, host, start and end times, wall time), as DomainBed's records do, so that
scripts/results.py can filter and group runs by any configuration key instead of parsing
folder names.
"""
import datetime
import hashlib
import os
import platform
import socket
import subprocess
import time

import numpy as np
import torch

import metrics

ROOT = os.path.dirname(os.path.abspath(__file__))
RECORD_VERSION = 2  # 1: name, method, dataset, epochs, metrics; 2: + config, provenance


def labels(dataset=None):
    """{key: name in tables and figures}, in table order, from the registries: each method's
    label, the variants its flags make (IRM's ERM), the datasets' variants (the grayscale
    oracle, LNL's stage 2 on LfF's benchmark) after the baseline, and where `dataset` is given,
    that benchmark's own names (LfF's "Vanilla" for the baseline)."""
    from dataset_specs import DATASETS  # here: both import the data code, which needs this
    from methods import METHODS         # module's neighbours loaded first
    out = {}
    for name, cls in METHODS.items():
        out[name] = cls.label or name
        out.update({key: label for key, label, _ in cls.variants})
        if name == "baseline":  # the data variants (the grayscale oracle) are baselines
            out.update({key: label for spec in DATASETS.values()
                        for key, label, _ in spec.variants})
    if dataset:
        out.update(DATASETS[dataset].names)
    return out


def git_state(root=ROOT):
    """{'commit', 'dirty'} of the checkout; None for both outside a git checkout. Dirty counts
    modified tracked files and untracked ones, except ignored ones (outputs/) and results/:
    records and resume points that the long runs rewrite as they go, not code."""
    def git(*cmd):
        return subprocess.run(["git", "-C", root, *cmd], capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--", ".", ":(exclude)results")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


# The code this process runs is the code it loaded, at its start: read the checkout's state then,
# not when the run ends (a run of hours outlives commits and edits made beside it).
LOADED_CODE = git_state()


def code_text(state=None):
    """'commit 1a2b3c4d' (+ ' with uncommitted changes'), for a piece's line in run.log."""
    state = LOADED_CODE if state is None else state
    if not state["commit"]:
        return "code outside a git checkout"
    return f"code at commit {state['commit'][:12]}" + (" with uncommitted changes"
                                                        if state["dirty"] else "")


def cpu_name():
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says), or ''."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def device_description(device):
    """The device a run actually used ('cpu', 'cuda:0') and its name: a GPU's, or on the CPU
    the model, the instruction set torch uses and the threads (a run carried between
    machines changes CPU between pieces, and the kernels with it)."""
    out = {"device": str(device)}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    else:
        out.update(device_name=cpu_name(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                   threads=torch.get_num_threads())
    return out


def device_text(device):
    """'cuda:0 (NVIDIA H200)', 'cpu (Intel(R) Xeon(R) ..., AVX512, 1 thread)': run.log's."""
    d = device_description(device)
    if "threads" not in d:
        return f"{d['device']} ({d['device_name']})"
    threads = f"{d['threads']} thread" + ("s" if d["threads"] != 1 else "")
    name = f"{d['device_name']}, " if d["device_name"] else ""
    return f"{d['device']} ({name}{d['cpu_capability']}, {threads})"


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec="seconds")


def provenance(device, started, ended, world=1, train_seconds=None):
    """Where, when and with what a run ran: started/ended are time.time() values of the
    process that finished it (wall_time_s); train_time_s adds the processes it resumed from.
    commit/dirty describe the code that process loaded (LOADED_CODE); checkout_changed says
    the checkout's state differed by the end (each piece's code is in run.log)."""
    changed = git_state() != LOADED_CODE
    # commit_read_at: records before 465dc81 named the checkout at the run's end instead
    return {**LOADED_CODE, "commit_read_at": "process start", "checkout_changed": changed,
            **device_description(device),
            "world_size": world,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None,
            "python": platform.python_version(), "host": socket.gethostname(),
            "started": _iso(started), "ended": _iso(ended),
            "wall_time_s": round(ended - started, 3),
            "train_time_s": round(ended - started if train_seconds is None else train_seconds,
                                  3)}


def resolved_config(args, device):
    """Every argument as the run used it; 'device' is the device used, not 'auto'."""
    return {**vars(args), "device": str(device), "device_requested": args.device}


def selection(history, first_epoch=1):
    """Test-free model selection over a run's epochs (--val_fraction): the epoch with the best
    validation accuracy (the first, on ties), its test accuracy, and the best test accuracy
    over the epochs evaluated (the oracle: chosen on the test set, which no honest report may
    use; recorded only to show the gap); where validation has groups, also the epoch with the
    best validation worst-group accuracy and its test accuracy. Only epochs from first_epoch
    on, those of the model the method reports (Method.reported_from: JTT's second model).
    {} without validation accuracies."""
    val, test, worst = metrics.VALIDATION, metrics.FINAL, metrics.worst_group("val")
    rows = [r for r in history if val in r and test in r and r.get("epoch", 0) >= first_epoch]
    if not rows:
        return {}
    chosen = max(rows, key=lambda r: (r[val], -r["epoch"]))
    oracle = max(rows, key=lambda r: (r[test], -r["epoch"]))
    out = {"selected_epoch": chosen["epoch"], f"{val}_selected": chosen[val],
           metrics.SELECTED: chosen[test], metrics.ORACLE: oracle[test],
           "oracle_epoch": oracle["epoch"]}
    groups = [r for r in rows if worst in r]
    if groups:  # GroupDRO's and JTT's criterion (Sagawa et al. 2020; Liu et al. 2021)
        best = max(groups, key=lambda r: (r[worst], -r["epoch"]))
        out.update(selected_epoch_worst_group=best["epoch"],
                   **{f"{metrics.SELECTED}_worst_group": best[test]})
    return out


# A run has collapsed to one class when this share of its test predictions or more name one
# class: the test sets here give each class about 1/K of the images, so a model that still
# separates classes stays far below it (BlindEye's failure, issue #41).
COLLAPSE_SHARE = 0.9


def top_class_share(preds, n_classes):
    """The largest share of predictions that name one class."""
    preds = np.asarray(preds, np.int64)
    return float(np.bincount(preds, minlength=n_classes).max() / max(len(preds), 1))


def collapse(history, share=COLLAPSE_SHARE):
    """A run's collapse to one class from its epochs' test_top_class_share: None when no
    evaluated epoch reached `share`; else the first epoch that did, the epochs that did, and
    whether the final epoch is one of them (the accuracy then is a class's share, not the
    method's)."""
    rows = [r for r in history if metrics.TOP_CLASS in r]
    hit = [r["epoch"] for r in rows if r[metrics.TOP_CLASS] >= share]
    if not hit:
        return None
    return {"first_epoch": hit[0], "epochs": len(hit), "final": hit[-1] == rows[-1]["epoch"],
            "final_top_class_share": rows[-1][metrics.TOP_CLASS], "threshold": share}


def collapse_text(state):
    """'collapsed to one class from epoch 41 (still at the end)' for logs and tables."""
    if not state:
        return ""
    end = "still at the end" if state["final"] else "recovered by the end"
    return f"collapsed to one class at epoch {state['first_epoch']} ({end})"


def data_digest(sets):
    """sha256 over the digests of every set a run uses (train, test, extra evaluation sets):
    the exact arrays (in-memory datasets) or file lists with their labels (image files)."""
    if not all(hasattr(ds, "digest") for ds in sets.values()):
        return None  # a dataset class without digest(): the record says nothing
    h = hashlib.sha256()
    for name in sorted(sets):
        h.update(f"{name}:{sets[name].digest()};".encode())
    return h.hexdigest()


def results_record(args, device, started, epochs, final, world=1, train_seconds=None,
                   step_path=None, correct=None, data_sha256=None, init=None):
    """results.json's content: the flat fields earlier records had (experiment, method,
    dataset, epochs, final metrics) plus config and provenance (with step_path: how the
    finishing process ran its steps, Solver.step_path()). correct (one bool per test
    example) adds test_acc_ci95, its bootstrap stated in the provenance. init: the checkpoint
    a stage-2 run started from (path, epoch, sha256), so the record names it after the
    checkpoints are gone (the ledger keeps none)."""
    prov = provenance(device, started, time.time(), world, train_seconds)
    if step_path is not None:
        prov["step_path"] = step_path
    if data_sha256 is not None:
        prov["data_sha256"] = data_sha256
    interval = {}
    if correct is not None:
        interval = {metrics.CI95: bootstrap_ci(correct)}
        prov[f"{metrics.CI95}_method"] = BOOTSTRAP
    return {"experiment": args.experiment_name, "method": args.method,
            "dataset": args.dataset_name, "epochs": epochs, **final, **interval,
            "init": init, "record_version": RECORD_VERSION,
            "config": resolved_config(args, device), "provenance": prov}


def has_bias_attribute(args):
    """Whether the run's dataset has a bias attribute (its spec's bias_attribute)."""
    from dataset_specs import DATASETS  # here: records need not import the data builders
    return DATASETS[args.dataset_name].bias_attribute


def bias_agreement(preds, bias_index, n_classes):
    """The paper's diagnostic: the share of test predictions equal to the bias attribute (on
    Colored MNIST, the digit whose mean colour the image was painted with; chance 0.1 on the
    unbiased test set). None when the bias attribute does not name a class."""
    bias_index = np.asarray(bias_index)[:len(preds)]
    if len(bias_index) != len(preds) or bias_index.max(initial=0) >= n_classes:
        return None
    return float((np.asarray(preds) == bias_index).mean())


def bias_cells(labels, bias):
    """The (label, bias) cells the training correlation favours: those where P_train(b | y)
    exceeds 1/K (K: the bias values seen in training). On Colored MNIST each digit with its
    own colour; on Dogs and Cats TB1 (cat, dark) and (dog, bright); on IMDB-Face EB1 women
    with the young age bins and men with the old ones. Returns a sorted array of cell codes
    y * (B + 1) + b with B the largest bias value (cell_codes)."""
    labels, bias = np.asarray(labels, np.int64), np.asarray(bias, np.int64)
    k, top = len(np.unique(bias)), int(bias.max(initial=0))
    cells = []
    for y in np.unique(labels):
        values, counts = np.unique(bias[labels == y], return_counts=True)
        share = counts / counts.sum()
        cells += [int(y) * (top + 1) + int(v) for v, c in zip(values, share) if c > 1 / k]
    return {"codes": np.array(sorted(cells), np.int64), "top": top}


def worst_group_accuracy(labels, preds, bias):
    """The lowest accuracy over the (label, bias label) groups that hold examples: the metric
    GroupDRO (Sagawa et al., ICLR 2020) and JTT (Liu et al., ICML 2021) are judged by. None
    without examples."""
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    bias = np.asarray(bias, np.int64)[:len(labels)]
    if not len(labels):
        return None
    groups = labels * (int(bias.max(initial=0)) + 1) + bias
    _, group, counts = np.unique(groups, return_inverse=True, return_counts=True)
    hits = np.bincount(group, weights=(preds == labels).astype(np.float64))
    return float((hits / counts).min())


def group_counts(labels, preds, bias, cells):
    """Per (label, bias label) group of an evaluation set: [label, bias label, examples,
    correct, aligned (1: a cell the training correlation favours, bias_cells)], for the
    intervals of the validation criteria (hparams.py) without keeping every prediction."""
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    bias = np.asarray(bias, np.int64)[:len(labels)]
    out = []
    for y, b in sorted(set(zip(labels.tolist(), bias.tolist()))):
        part = (labels == y) & (bias == b)
        aligned = b <= cells["top"] and y * (cells["top"] + 1) + b in set(cells["codes"].tolist())
        out.append([y, b, int(part.sum()), int((preds[part] == y).sum()), int(aligned)])
    return out


def aligned_accuracies(cells, labels, preds, bias):
    """{test_acc_aligned, test_acc_conflicting}: accuracy on the test examples whose
    (label, bias) is a cell the training correlation favours (bias_cells), and on the rest.
    A part without examples is left out."""
    labels, preds, bias = (np.asarray(a, np.int64) for a in (labels, preds, bias[:len(labels)]))
    inside = (bias <= cells["top"]) & np.isin(labels * (cells["top"] + 1) + bias,
                                              cells["codes"])
    out = {}
    for name, part in ((metrics.aligned(), inside), (metrics.conflicting(), ~inside)):
        if part.any():
            out[name] = float((preds[part] == labels[part]).mean())
    return out


# The 95% interval of a test accuracy: a bootstrap over the test examples. Resampling n
# examples with replacement makes the number correct Binomial(n, accuracy), so it is drawn so
# (the same distribution as resampling the examples, without an n x resamples array).
BOOTSTRAP = {"method": "bootstrap over test examples", "resamples": 10000, "seed": 0,
             "level": 0.95}


def bootstrap_ci(correct, resamples=BOOTSTRAP["resamples"], seed=BOOTSTRAP["seed"],
                 level=BOOTSTRAP["level"]):
    """[low, high]: the central `level` interval of the accuracy over `resamples` bootstrap
    resamples of the test examples (correct: one bool per example), seeded."""
    correct = np.asarray(correct, bool)
    n = len(correct)
    if n == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = rng.binomial(n, correct.mean(), size=resamples) / n
    tail = (1 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def _hparam_value(v):
    """TensorBoard's HPARAMS view takes bool, str, int and float."""
    return v if isinstance(v, (bool, str, int, float)) else str(v)


def log_hparams(writer, config, metrics, step):
    """Hyperparameters and final metrics into the run's own event file (no sub-run), so that
    the HPARAMS view lists every run of a --logdir as one row. Metrics go under 'final/' so
    that they do not collide with the per-epoch scalars."""
    from torch.utils.tensorboard.summary import hparams

    final = {f"final/{k}": float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    exp, ssi, sei = hparams({k: _hparam_value(v) for k, v in config.items()}, final)
    for summary in (exp, ssi, sei):
        writer._get_file_writer().add_summary(summary, step)
    for k, v in final.items():
        writer.add_scalar(k, v, step)


def confusion_panels(args, labels, preds, bias, n_classes, epoch, checkpoint):
    """[(name, (matrix, title, ylabel, xlabel, row_colours))] for the label and the bias
    confusion matrices, titled with what produced them (run, the dataset spec's words such as
    Colored MNIST's sigma^2, epoch, checkpoint); the bias rows in the spec's colours. A biased model predicts the colour: its mass sits on the bias matrix's
    diagonal (the paper's Fig. 5 story)."""
    from dataset_specs import DATASETS
    from utils import confusion_matrix

    spec = DATASETS[args.dataset_name]
    by_label = confusion_matrix(labels, preds, n_classes, n_classes)
    by_bias = confusion_matrix(bias, preds, int(np.max(bias)) + 1, n_classes)
    acc = float(np.trace(by_label)) / max(len(labels), 1)
    where = ", ".join(part for part in (
        spec.words(args), f"epoch {epoch}" if epoch is not None else "", checkpoint) if part)
    colours = spec.bias_colours(args) if spec.bias_colours else None
    return [("label", (by_label, f"{args.experiment_name}: accuracy {acc:.3f}\n{where}",
                       "true label", "predicted label", None)),
            ("bias", (by_bias, f"{args.experiment_name}: prediction vs bias attribute\n{where}",
                      "bias attribute (colour index)" if colours is not None
                      else "bias attribute", "predicted label", colours))]


def prediction_rows(labels, preds, bias, probs):
    """Test mode's predictions, one row per test example (true_label, pred_label, bias_index,
    probabilities over the classes): a structured array, which np.load reads without
    unpickling anything."""
    dtype = [("true_label", "i8"), ("pred_label", "i8"), ("bias_index", "i8"),
             ("probabilities", "f4", (probs.shape[1],))]
    rows = np.zeros(len(labels), dtype)
    rows["true_label"], rows["pred_label"], rows["bias_index"] = labels, preds, bias
    rows["probabilities"] = probs
    return rows
