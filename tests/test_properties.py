"""Property-based tests of the argument and config layer (hypothesis): whatever flags, names and
YAML documents a user types, main.py's checks end in success or in one line with a non-zero
exit, never in a traceback, and never write outside --output_dir."""
import contextlib
import io
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import main as cli
import run_folder

FLAGS = sorted({s for a in cli.build_parser()._actions for s in a.option_strings
                if s.startswith("--") and s not in ("--help", "--output_dir", "--config")})
WEIRD_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
NUMBERS = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True,
                                                               allow_infinity=True))
VALUES = st.one_of(NUMBERS.map(str), WEIRD_TEXT, st.sampled_from(
    ["0", "-1", "1e309", "nan", "../..", "/etc", "a/../../b", "g_*", "h[1]", "a\nb", "", " ",
     "lnl", "baseline", "irm", "ColoredMNIST", "IRMColoredMNIST", "cpu", "cuda", "auto"]))
ARGV = st.lists(st.tuples(st.sampled_from(FLAGS), st.lists(VALUES, max_size=2)), max_size=5)
YAML_SCALARS = st.one_of(NUMBERS, WEIRD_TEXT, st.booleans(), st.none())
YAML_DOCS = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from([f.lstrip("-") for f in FLAGS]), WEIRD_TEXT,
                              st.integers()),
                    st.one_of(YAML_SCALARS, st.lists(YAML_SCALARS, max_size=3)), max_size=4),
    st.lists(YAML_SCALARS, max_size=3), YAML_SCALARS)


def snapshot(root, skip):
    out = {}
    for folder, _, files in os.walk(root):
        if os.path.commonpath([os.path.abspath(folder), skip]) == skip:
            continue
        for f in files:
            path = os.path.join(folder, f)
            out[path] = open(path, "rb").read() if os.path.isfile(path) else None
    return out


def check_and_hold(argv, tmp):
    """main.py's checks up to the first write (parsing, validation, the run folder, the
    checkpoint it starts from), as a user's command runs them; returns (exit code, stderr)."""
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser, runs = cli.parse_runs(argv)
            for args in runs:
                cli.check_run(parser, args)
        except SystemExit as exc:
            code = exc.code
        except cli.UserError as exc:  # main() prints these as one line, exit 1
            print(f"error: {exc}", file=err)
            code = 1
        finally:
            for folder in list(run_folder._held):
                run_folder.unlock(folder)
    return code, err.getvalue()


def assert_one_line_or_success(code, err):
    assert "Traceback" not in err, err
    if code not in (0, None):
        lines = [line for line in err.strip().splitlines() if "error" in line]
        assert len(lines) == 1, err
        assert len(lines[0]) < 2000, lines[0][:300]


COMMON = settings(max_examples=120, deadline=None, derandomize=True,  # the same cases in CI
                  suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(ARGV)
def test_random_flags_end_in_success_or_one_line(pairs):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        argv = ["--output_dir", out, "--data_root_base", os.path.join(tmp, "data"),
                "--device", "cpu"]
        for flag, values in pairs:
            argv += [flag, *values]
        before = snapshot(tmp, out)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            code, err = check_and_hold(argv, tmp)
        finally:
            os.chdir(cwd)
        assert_one_line_or_success(code, err)
        assert snapshot(tmp, out) == before  # nothing outside --output_dir


@COMMON
@given(YAML_DOCS, st.booleans())
def test_random_config_documents_end_in_success_or_one_line(doc, as_text):
    import yaml
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        path = os.path.join(tmp, "c.yaml")
        with open(path, "w") as fh:
            fh.write(doc if as_text and isinstance(doc, str) else yaml.safe_dump(doc))
        before = snapshot(tmp, out)
        code, err = check_and_hold(["--config", path, "--output_dir", out, "--data_root_base",
                                    os.path.join(tmp, "data"), "--device", "cpu"], tmp)
        assert_one_line_or_success(code, err)
        assert snapshot(tmp, out) == before


@pytest.mark.parametrize("name", ["a\nb", "../x", "/abs", "g_*", "h[1]", "a/./b", "\x00"])
def test_hostile_names_never_leave_the_output_folder(name):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        before = snapshot(tmp, out)
        code, err = check_and_hold(["--output_dir", out, "--device", "cpu",
                                    "--experiment_name", name], tmp)
        assert_one_line_or_success(code, err)
        assert snapshot(tmp, out) == before
