"""The metrics a run records, named once: their names in metrics.jsonl and results.json, their
TensorBoard tags, and the roles the tables and model selection give them.

An evaluation set's metrics are built from its name (the test set's, and each extra set's,
e.g. --val_fraction's "val"): accuracy, accuracy on the images off the training correlation
and beside it on those on it, worst-group accuracy. The test set's accuracy at the final
epoch is the number every table reports (Kim et al., CVPR 2019, report the final model);
the others measure what it hides. A method's training statistics (its losses, train_acc)
are its own (Method.step) and go under TensorBoard's train/.
"""
TEST = "test"


def accuracy(split=TEST):
    return f"{split}_acc"


def aligned(split=TEST):
    """Accuracy on the images whose (label, bias) cell the training correlation favours."""
    return f"{split}_acc_aligned"


def conflicting(split=TEST):
    """Accuracy on the images off the training correlation."""
    return f"{split}_acc_conflicting"


def worst_group(split=TEST):
    """The lowest accuracy over the (label, bias label) groups (Sagawa et al., ICLR 2020)."""
    return f"{split}_worst_group_acc"


def groups(split):
    """A split's per-group counts in a record ([label, bias, n, correct, aligned] rows)."""
    return f"{split}_groups"


FINAL = accuracy()                   # the tables' number: the final epoch's test accuracy
TRAIN = accuracy("train")            # a method's accuracy on its training batches (Method.step)
CI95 = f"{FINAL}_ci95"               # its bootstrap interval (records.BOOTSTRAP)
AGREEMENT = "bias_agreement"         # the paper's diagnostic (records.bias_agreement)
TOP_CLASS = f"{TEST}_top_class_share"  # the largest share of test predictions one class gets
PROBE = "probe_bias_acc"             # the bias a fresh head reads from the frozen f (probe.py)
PROBE_CHANCE = "probe_chance"
VALIDATION = accuracy("val")         # what --val_fraction's epoch selection maximises
SELECTED = f"{FINAL}_selected"       # the test accuracy at the epoch validation selects
ORACLE = f"{FINAL}_oracle"           # the best test accuracy over epochs: chosen on the test
                                     # set, recorded only to show the gap, never reported
# The Colored-MNIST table's second part: what the final accuracy hides (records from
# 2026-11-29 on hold them)
DETAILS = (aligned(), conflicting(), PROBE, PROBE_CHANCE, SELECTED, ORACLE)
CURVES = (FINAL, AGREEMENT)          # drawn first by results.py curves, before the losses


def tag(key, eval_sets=()):
    """A metric's TensorBoard tag: the test set's and the extra sets' under test/ (test_acc:
    test/acc, val_acc: test/val_acc), the method's training statistics under train/."""
    split = key.split("_")[0]
    if split == TEST:
        return f"test/{key[len(TEST) + 1:]}"
    if key == AGREEMENT or split in eval_sets:
        return f"test/{key}"
    return f"train/{key}"


def is_result(key):
    """Whether a results.json field is a final metric for TensorBoard's HPARAMS view."""
    return key.endswith("_acc") or key in (AGREEMENT, "epochs", aligned(), conflicting())
