"""Property-based tests of the scripts' readers (hypothesis), as tests/test_properties.py does for
main.py's flags: whatever a handed resume point or ledger holds (garbage bytes, JSON of the wrong
type, deep nesting, NaN, text where numbers go), `long_runs.py status` and `table` and
`results.py status`, `table` and `ledger` end in output or one line, never in a traceback, and
write nothing outside the folders they are named."""
import contextlib
import io
import json
import os
import sys
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "short_lived"))
import long_runs  # noqa: E402
import results  # noqa: E402

RUNS = ("cmnist_var0.020_seed0_baseline", "cmnist_var0.020_seed0_lnl")
FILES = ("results.json", "metrics.jsonl", "pace.json", "args.json", "probe.json")
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.sampled_from(["3", "two", "0.020", "NaN"]))
KEYS = st.sampled_from(["epochs", "epoch", "test_acc", "seconds", "pieces", "cpu_1_threads",
                        "color_var", "method", "seed", "config", "provenance", "dataset_name",
                        "probe_bias_acc", "variant", "device"])
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


def as_json(value):
    return json.dumps(value, allow_nan=True).encode()


CONTENT = st.one_of(
    VALUES.map(as_json),                                            # JSON, any shape
    st.dictionaries(KEYS, VALUES, max_size=6).map(as_json),         # an object, odd fields
    st.lists(st.dictionaries(KEYS, VALUES, max_size=3), max_size=4).map(
        lambda rows: b"\n".join(as_json(r) for r in rows)),         # JSONL, odd rows
    st.binary(max_size=64),                                         # garbage, not UTF-8
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),        # deep nesting
    st.just(b'{"epochs": 100, "test_acc": NaN}'),
    st.fixed_dictionaries({"epochs": st.one_of(st.just(100), SCALARS), "test_acc": st.just(0.5)},
                          optional={"config": VALUES, "provenance": VALUES, "method": VALUES,
                                    "dataset": VALUES, "init_checkpoint": VALUES,
                                    "color_var": VALUES}).map(as_json))  # nearly a record
FOLDER = st.dictionaries(st.sampled_from(FILES), CONTENT, max_size=4)
TREE = st.dictionaries(st.tuples(st.sampled_from(["keep", "ledger"]), st.sampled_from(RUNS)),
                       FOLDER, min_size=1, max_size=3)


def snapshot(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def write_tree(tmp, tree):
    """{(folder, run): {file: bytes}} written under tmp; returns its snapshot."""
    for (where, run), files in tree.items():
        os.makedirs(os.path.join(tmp, where, run), exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(tmp, where, run, name), "wb") as fh:
                fh.write(data)
    return snapshot(tmp)


def call(main, argv):
    """A script's main() as the user runs it: (exit code, output); any other exception is a
    traceback the user would see, and fails the test."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv) or 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(TREE)
def test_the_scripts_read_any_damaged_record_without_a_traceback(tree):
    with tempfile.TemporaryDirectory() as tmp:
        before = write_tree(tmp, tree)
        folders = ["--work", os.path.join(tmp, "work"), "--keep", os.path.join(tmp, "keep"),
                   "--ledger", os.path.join(tmp, "ledger"), "--sigmas", "0.020", "--seeds", "0"]
        for argv in (["status", *folders], ["table", *folders]):
            code, out = call(long_runs.main, argv)
            assert code == 0 or isinstance(code, str), out
        for argv in (["status", os.path.join(tmp, "keep")],
                     ["table", os.path.join(tmp, "ledger"), "--group_by", "variant"],
                     ["ledger", os.path.join(tmp, "keep"), "--into", os.path.join(tmp, "new")]):
            if os.path.isdir(argv[1]):
                code, out = call(results.main, argv)
                assert code in (0, 1, None) or isinstance(code, str), out
        after = snapshot(tmp)
        assert {k: v for k, v in after.items() if not k.startswith("new" + os.sep)} == before


COMPARE_RUNS = ("cmp_ratio0.01_seed0_lff_q0.7", "cmp_ratio0.01_seed0_lff_q0.5",
                "cmp_ratio0.01_seed0_lff_q0.9", "cmp_ratio0.01_seed1_lff")
GROUP_ROW = st.one_of(
    st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 60), st.integers(0, 60),
              st.integers(0, 1)).map(list),                           # nearly a group's counts
    st.lists(st.one_of(st.integers(-3, 2 ** 40), SCALARS), min_size=4, max_size=6))
COMPARE_RECORD = st.fixed_dictionaries(
    {"epochs": st.one_of(st.just(100), SCALARS), "test_acc": st.one_of(st.just(0.5), SCALARS)},
    optional={"val_groups": st.one_of(st.lists(GROUP_ROW, max_size=4), VALUES),
              "test_groups": st.lists(GROUP_ROW, max_size=4), "collapse": VALUES,
              "val_acc_conflicting": VALUES, "test_acc_oracle": VALUES,
              "hparam_selection": VALUES, "config": st.one_of(VALUES, st.just(
                  {"method": "lff", "lff_q": 0.7, "lff_conflict_ratio": 0.01}))}).map(as_json)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.tuples(st.sampled_from(["keep", "ledger"]),
                                 st.sampled_from(COMPARE_RUNS)),
                       st.dictionaries(st.sampled_from(FILES), st.one_of(COMPARE_RECORD, CONTENT),
                                       max_size=3), min_size=1, max_size=4))
def test_the_compare_plans_readers_take_damaged_grid_records_without_a_traceback(tree):
    """The comparison plan's fields (validation groups, collapse, the selection) damaged in any
    way: status, the table and the full table end in output or one line."""
    with tempfile.TemporaryDirectory() as tmp:
        before = write_tree(tmp, tree)
        folders = ["--plan", "compare", "--work", os.path.join(tmp, "work"), "--keep",
                   os.path.join(tmp, "keep"), "--ledger", os.path.join(tmp, "ledger"),
                   "--ratios", "0.01", "--seeds", "0", "1", "--compare_methods", "lff"]
        for argv in (["status", *folders], ["table", *folders], ["table", "--full", *folders]):
            code, out = call(long_runs.main, argv)
            assert code == 0 or isinstance(code, str), out
        assert snapshot(tmp) == before
