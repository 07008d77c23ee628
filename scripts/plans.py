"""The plans: which runs, in which order, with which flags (scripts/launch.py runs them through a
launcher, short_lived/long_runs.py in budgeted pieces; plan_runs.py reads where each stands).
A run is a dict: its name, main.py flags, the values its args.json must record (`expect`), the
table cell it fills (`variant`, `sigma`: sigma^2, or LfF's share of conflicting images), its
seed and epochs, and the run it starts from (`after`: a stage-2 run waits for its baseline).

- headline: the LNL paper's Colored-MNIST table (Kim et al., CVPR 2019, Fig. 4) in issue #34's
  order, its spread at the headline's two sigma^2, then the methods after LNL on that ground;
- lff: LfF's Colored MNIST (issue #33), every method x the four shares x 3 seeds;
- compare: every method there at hyperparameters chosen on validation (issue #41);
- irm_cmnist, andmask_synthetic, real_images: the run scripts' benchmarks, each run a
  committed config's recipe at a seed (CONFIG_PLANS: launch.py only, no README table).
"""
import functools
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sigma^2 of the paper's table; the first two are the headline's
HEADLINE_SIGMAS = ("0.020", "0.050", "0.035", "0.025", "0.045", "0.030", "0.040")
VARIANTS = ("baseline", "lnl", "blindeye", "gray", "lff", "groupdro", "jtt")  # the table's rows
SEEDS = (0, 1, 2)  # seed 0 everywhere; the others at the headline's two sigma^2 (its spread)


# --------------------------------------------------------------------------- the plan
STAGE_LR = {1: "0.01", 2: "0.001"}  # the reference recipe's lr per stage (Kim et al., §4.1)
CMNIST_VARIANTS = ("baseline", "lnl", "blindeye", "gray")  # the paper's table's rows


def stage_of(variant):
    """(the method a row of the paper's table trains, its stage): Gray is the baseline."""
    method = "baseline" if variant == "gray" else variant
    return method, 1 if method == "baseline" else 2


def stage_flags(variant):
    """The reference Colored-MNIST recipe's flags for one of its rows (Kim et al., CVPR 2019,
    §4.1): stage 1 (the baseline; Gray, the baseline on grayscale images) at lr 0.01; stage 2
    (LNL, BlindEye), from the baseline's last checkpoint, at lr 0.001. The plans and the run
    scripts (run_cmnist.sh, run_cmnist_table.sh: `python scripts/plans.py stage VARIANT`)
    take the recipe from here."""
    method, stage = stage_of(variant)
    return (["--method", method, "--lr", STAGE_LR[stage]]
            + (["--grayscale"] if variant == "gray" else []))  # Gray: no colour, train or test


def cmnist_run(sigma, variant, epochs, seed=0, tiny=False):
    """One run of the reference Colored-MNIST recipe (stage_flags), named as
    scripts/run_cmnist.sh names it. `expect`: the values its args.json must record
    (short_lived/keep.py check_record)."""
    base = f"cmnist_var{sigma}_seed{seed}"
    method, stage = stage_of(variant)
    expect = {"dataset_name": "ColoredMNIST", "color_var": sigma, "seed": seed, "data_seed": 0,
              "method": method, "lr": float(STAGE_LR[stage]), "grayscale": variant == "gray"}
    flags = ["--dataset_name", "ColoredMNIST", "--color_var", sigma, "--seed", str(seed),
             "--data_seed", "0", "--epochs", str(epochs), *stage_flags(variant)]
    if tiny:  # the rehearsal: 600 images, for tests
        flags += ["--max_train_samples", "512", "--max_test_samples", "256"]
        expect.update(max_train_samples=512, max_test_samples=256)
    return {"name": f"{base}_{variant}", "flags": flags, "expect": expect, "sigma": sigma,
            "variant": variant, "seed": seed, "epochs": epochs,
            "after": None if stage == 1 else f"{base}_baseline"}


def headline_plan(epochs, sigmas=HEADLINE_SIGMAS, tiny=False, seeds=SEEDS, variants=VARIANTS):
    """The paper's table in the order issue #34 asks for (the first two sigma^2 are the
    headline's; a stage-2 run waits for its baseline, the next ready run takes a free lane):
    1. seed 0 baseline + LNL at the headline sigma^2 (done by 2026-11-30);
    2. BlindEye at the first sigma^2, then baseline + LNL at the third (in flight on 2026-12-01);
    3. Gray at the second and the first sigma^2: the shape-only oracle at baseline cost, which
       says whether shape alone tops out where LNL does;
    4. the other seeds at the headline sigma^2, baseline + LNL: the headline with its spread;
    5. baseline + LNL at the remaining sigma^2, in their order;
    6. BlindEye, then Gray, at every sigma^2 not yet planned;
    7. LfF, GroupDRO and JTT at the headline sigma^2 (issue #33: the methods after LNL on
       LNL's ground) but OTHER_DIRECTION's, which the comparison plan trains."""
    def runs(sigma, *which, seed=0):
        return [cmnist_run(sigma, v, epochs, seed, tiny) for v in which if v in variants]
    head, third, rest = list(sigmas[:2]), list(sigmas[2:3]), list(sigmas[3:])
    plan = [r for s in head for r in runs(s, "baseline", "lnl")]
    plan += runs(sigmas[0], "blindeye") + [r for s in third for r in runs(s, "baseline", "lnl")]
    plan += [r for s in reversed(head) for r in runs(s, "gray")]
    plan += [r for seed in seeds if seed != 0 for s in head
             for r in runs(s, "baseline", "lnl", seed=seed)]
    plan += [r for s in rest for r in runs(s, "baseline", "lnl")]
    plan += [r for s in sigmas[1:] for r in runs(s, "blindeye")]
    plan += [r for s in third + rest for r in runs(s, "gray")]
    plan += [later_method_run(s, m, epochs, tiny) for s in head for m in AFTER_LNL
             if m in variants and s != OTHER_DIRECTION]  # there: the comparison plan's runs
    if set(variants) == set(VARIANTS):
        return plan
    return with_start_runs(plan, headline_plan(epochs, sigmas, tiny, seeds))


def with_start_runs(plan, whole):
    """The plan with the run each stage-2 run starts from (found in `whole`, the plan with
    every variant) placed before the first run that needs it: `--variants lnl` trains the
    baselines LNL starts from."""
    by_name, names, out = {r["name"]: r for r in whole}, {r["name"] for r in plan}, []
    for run in plan:
        if run["after"] and run["after"] not in names:
            out.append(by_name[run["after"]])
            names.add(run["after"])
        out.append(run)
    return out


OTHER_DIRECTION = "0.020"  # sigma^2 of the later methods on LNL's data in the comparison plan
AFTER_LNL = ("lff", "groupdro", "jtt")  # the later methods, on LNL's Colored MNIST at the end


def later_method_run(sigma, method, epochs, tiny=False):
    """A method after LNL on LNL's Colored MNIST (issue #33, 5): LNL's networks and its
    baseline recipe (SGD, lr 0.01, 100 epochs from scratch); the bias label GroupDRO groups by
    is the digit whose palette colour the image wears. JTT's T: half the epochs."""
    run = cmnist_run(sigma, "baseline", epochs, tiny=tiny)
    run["flags"][run["flags"].index("--method") + 1] = method
    if method == "jtt":
        run["flags"] += ["--jtt_first_epochs", str(max(1, epochs // 2))]
    run["expect"]["method"] = method
    return {**run, "name": run["name"].replace("_baseline", f"_{method}"), "variant": method}


# LfF's benchmark (issue #33, 4): every method with the benchmark's own recipe
# (configs/lff_cmnist.yaml), x the paper's four shares of conflicting images x 3 seeds
LFF_RATIOS = ("0.005", "0.01", "0.02", "0.05")
LFF_METHODS = ("baseline", "lff", "groupdro", "jtt", "lnl", "blindeye", "lnl_stage2",
               "blindeye_stage2")
LFF_NAMES = {"baseline": "vanilla"}  # the LfF paper's name for the plain model
STAGE2 = "_stage2"
LFF_STAGE2_LR = "0.0001"  # a tenth of the recipe's 1e-3, as LNL's stage 2 takes a tenth of 0.01


def lff_run(ratio, variant, seed, epochs, tiny=False):
    """One run of LfF's benchmark: the preset's MLP, Adam 1e-3, batch 256, its share of
    conflicting images, a tenth of the training images held out for selection. LNL and
    BlindEye run twice: from scratch like every method here, and `<method>_stage2` as the LNL
    authors order them (pretrain, then unlearn: Kim et al. 2019 §4.1, their advice for an
    unstable game) from the vanilla run's last checkpoint at a tenth of its lr."""
    method = variant[:-len(STAGE2)] if variant.endswith(STAGE2) else variant
    flags = ["--config", os.path.join(ROOT, "configs", "lff_cmnist.yaml"), "--method", method,
             "--lff_conflict_ratio", ratio, "--seed", str(seed), "--data_seed", "0",
             "--epochs", str(epochs)]
    expect = {"dataset_name": "LfFColoredMNIST", "method": method,
              "lff_conflict_ratio": ratio, "seed": seed, "data_seed": 0}
    if method == "jtt":
        flags += ["--jtt_first_epochs", str(max(1, epochs // 2))]
    after = None
    if variant != method:
        flags += ["--lr", LFF_STAGE2_LR]
        expect["lr"] = float(LFF_STAGE2_LR)
        after = lff_run(ratio, "baseline", seed, epochs, tiny)["name"]
    if tiny:
        flags += ["--max_train_samples", "1000", "--max_test_samples", "300"]
        expect.update(max_train_samples=1000, max_test_samples=300)
    return {"name": f"lff_ratio{ratio}_seed{seed}_{LFF_NAMES.get(variant, variant)}",
            "flags": flags, "expect": expect, "sigma": ratio, "variant": variant, "seed": seed,
            "epochs": epochs, "after": after}


def lff_plan(epochs, ratios=LFF_RATIOS, seeds=SEEDS, methods=LFF_METHODS, tiny=False):
    """Seed by seed (every cell gets a first number before any gets its spread), each share of
    conflicting images, each method (a stage-2 run after the vanilla run it starts from)."""
    plan = [lff_run(r, m, s, epochs, tiny) for s in seeds for r in ratios for m in methods]
    return with_start_runs(plan, lff_plan(epochs, ratios, seeds, LFF_METHODS, tiny)
                           if set(methods) != set(LFF_METHODS) else plan)


# The comparison again (issue #41, 6): every method on LfF's benchmark as its authors run it,
# its hyperparameters chosen on the held-out validation split (hparams.py), never on the test
# set; then the methods after LNL on LNL's Colored MNIST at full length (the other direction).
# in the order they train: the cheap first; JTT's upsampled epochs (1 + lambda_up copies of an
# error set that T = 1 leaves large) and DFA's 238 epochs of two networks last
COMPARE_METHODS = ("baseline", "lff", "groupdro", "lnl", "blindeye", "jtt", "dfa")
COMPARE_RATIOS = ("0.01", "0.005", "0.02", "0.05")  # the table's headline share first
CRITERION = "val_acc_conflicting"  # hparams.CRITERIA: the choice's criterion
DFA_EPOCHS = 238  # configs/dfa_cmnist.yaml: 49,980 of their 50,000 steps


def method_grid(method, epochs):
    """The method's grid (hparams.points) for a plan of `epochs` per run: JTT's T, written
    for 100 epochs, scaled to the plan's length (a rehearsal's 3 epochs: T = 1 or 2)."""
    import hparams  # here: plans.py is read by scripts that need no torch until they train
    points = hparams.points(method)
    if method == "jtt" and epochs != 100:
        for p in points:
            p["jtt_first_epochs"] = min(epochs - 1, max(1, p["jtt_first_epochs"] * epochs // 100))
        points = [dict(t) for t in dict.fromkeys(tuple(p.items()) for p in points)]
    return points


def grid_flags(point):
    return [a for k, v in point.items() for a in (f"--{k}", f"{v:g}" if isinstance(v, float)
                                                   else str(v))]


def compare_run(ratio, method, seed, epochs, tiny=False, point=None, selection=None,
                grid=()):
    """One run of the comparison: the method's preset on LfF's benchmark (DFA: its own,
    configs/dfa_cmnist.yaml) at a grid point (seed 0), or at the choice the grid's validation
    made (--hparams_from `selection`, written when every grid run has finished)."""
    import hparams
    config = "dfa_cmnist.yaml" if method == "dfa" else "lff_cmnist.yaml"
    length = DFA_EPOCHS * epochs // 100 if method == "dfa" else epochs
    flags = ["--config", os.path.join(ROOT, "configs", config), "--method", method,
             "--lff_conflict_ratio", ratio, "--seed", str(seed), "--data_seed", "0",
             "--epochs", str(length)]
    expect = {"dataset_name": "LfFColoredMNIST", "method": method, "lff_conflict_ratio": ratio,
              "seed": seed, "data_seed": 0}
    name = f"cmp_ratio{ratio}_seed{seed}_{LFF_NAMES.get(method, method)}"
    if point:
        flags += grid_flags(point)
        expect.update(point)
        point_tag = hparams.tag(point)  # lff_q0.5 names its method already
        name = name[:-len(method)] + point_tag if point_tag.startswith(method) else (
            f"{name}_{point_tag}")
    if selection:
        flags += ["--hparams_from", selection]
    if tiny:
        flags += ["--max_train_samples", "1000", "--max_test_samples", "300"]
        expect.update(max_train_samples=1000, max_test_samples=300)
    return {"name": name, "flags": flags, "expect": expect, "sigma": ratio, "variant": method,
            "seed": seed, "epochs": length, "after": None, "probe": method != "dfa",
            "waits_for": [g["name"] for g in grid],
            "choose": {"method": method, "criterion": CRITERION, "path": selection,
                       "grid": [(g["point"], g["name"]) for g in grid]} if selection else None,
            "point": point}


def compare_plan(epochs, ratios=COMPARE_RATIOS, seeds=SEEDS, methods=COMPARE_METHODS,
                 tiny=False, ledger=None):
    """Seed 0: at each share of conflicting images, vanilla and every grid point of every
    method (DFA's, the slowest, last); then seeds 1 and 2 of vanilla and of each method at
    its choice (they wait for their grid). Then LfF, GroupDRO and JTT on LNL's Colored MNIST
    at sigma^2 0.020, seed 0, full length: LNL's benchmark has no image off the correlation in
    its training set, so no validation split drawn from it can choose: the recipe stays."""
    ledger = ledger or os.path.join(ROOT, "results", "compare")
    selection = lambda method, ratio: os.path.join(ledger, "selection",
                                                   f"{method}_ratio{ratio}.json")
    plan, grids = [], {}
    for ratio in ratios:
        for method in methods:
            if method == "baseline" or not method_grid(method, epochs)[0]:
                plan.append(compare_run(ratio, method, 0, epochs, tiny))
                continue
            runs = [compare_run(ratio, method, 0, epochs, tiny, point)
                    for point in method_grid(method, epochs)]
            grids[ratio, method] = [{"name": r["name"], "point": r["point"]} for r in runs]
            plan += runs
        if ratio == ratios[0] and "blindeye" in methods:
            plan += blindeye_on_lnls(epochs, tiny, grids[ratio, "blindeye"],
                                     selection("blindeye", ratio))
    for seed in (s for s in seeds if s != 0):
        for ratio in ratios:
            for method in methods:
                grid = grids.get((ratio, method))
                path = selection(method, ratio) if grid else None
                plan.append(compare_run(ratio, method, seed, epochs, tiny, selection=path,
                                        grid=grid or ()))
    plan += [{**later_method_run(OTHER_DIRECTION, m, epochs, tiny), "waits_for": [],
              "choose": None,
              "point": None} for m in AFTER_LNL if m in methods]
    return plan


def blindeye_on_lnls(epochs, tiny, grid, path):
    """BlindEye on LNL's Colored MNIST at sigma^2 0.020 again (issue #41, 3): the paper's
    two-stage recipe from a baseline of this plan's own, its alpha the one chosen on LfF's
    benchmark at the plan's first share (LNL's benchmark cannot choose: no validation image
    is off the correlation); the selection file says where it was chosen."""
    base = {**cmnist_run("0.020", "baseline", epochs, tiny=tiny), "waits_for": [],
            "choose": None, "point": None}
    run = cmnist_run("0.020", "blindeye", epochs, tiny=tiny)
    run["flags"] += ["--hparams_from", path]
    return [base, {**run, "waits_for": [g["name"] for g in grid], "point": None,
                   "choose": {"method": "blindeye", "criterion": CRITERION, "path": path,
                              "grid": [(g["point"], g["name"]) for g in grid]}}]


# --------------------------------------------------------------------------- the config plans
# The run scripts' benchmarks as plans (issue #43, 1): the recipe is a committed config
# (configs/*.yaml), a run that config at a seed; scripts/launch.py runs them on this machine or
# a cluster as it runs the tables, and the run_*.sh scripts are thin commands over it.
IRM_METHODS = ("erm", "irm", "gray", "andmask")  # configs/irm_cmnist_<method>.yaml
SPIRAL_FLAGS = {"baseline": ["--andmask_tau", "0"], "andmask": ["--andmask_tau", "1"],
                "geom": ["--andmask_variant", "geom", "--andmask_tau", "1"],
                "genmask": ["--method", "genmask"]}  # over configs/spiral.yaml (AND-mask)
REAL_IMAGES = {"dogs_cats": ("TB1", "TB2"), "imdb_gender": ("EB1", "EB2"),
               "imdb_age": ("EB1", "EB2")}  # configs/<benchmark>.yaml x its --bias_split
CONFIG_SEEDS = {"irm_cmnist": tuple(range(10)), "real_images": (0,)}  # else SEEDS


@functools.lru_cache(maxsize=None)
def config_epochs(config):
    """The epochs a committed config trains (the repository's own file, not a user's), read
    once per config however many runs of a plan take it."""
    import yaml
    with open(os.path.join(ROOT, "configs", f"{config}.yaml")) as fh:
        return int(yaml.safe_load(fh)["epochs"])


def config_run(name, config, seed, epochs, flags=(), variant=None, data_seed=True, after=None):
    """One run of a config's recipe: `flags` over it, at `seed` (and its data drawn with the
    same seed, as the IRM and AND-mask papers' restarts draw theirs, unless data_seed is
    False); `epochs` None: the config's."""
    length = epochs or config_epochs(config)
    seeds = ["--seed", str(seed)] + (["--data_seed", str(seed)] if data_seed else [])
    return {"name": name, "flags": ["--config", os.path.join(ROOT, "configs", f"{config}.yaml"),
                                    *flags, *seeds, "--epochs", str(length)],
            "expect": {"seed": seed}, "sigma": None, "variant": variant, "seed": seed,
            "epochs": length, "after": after}


def irm_plan(epochs=None, seeds=CONFIG_SEEDS["irm_cmnist"]):
    """IRM's Colored MNIST (Arjovsky et al. 2019): ERM, IRM, Gray and AND-mask at the paper's
    hyperparameters, restart by restart (restart r: --seed r --data_seed r)."""
    return [config_run(f"{m}_r{r}", f"irm_cmnist_{m}", r, epochs, variant=m)
            for r in seeds for m in IRM_METHODS]


def andmask_plan(epochs=None, seeds=SEEDS):
    """AND-mask's synthetic memorisation task (Parascandolo et al., ICLR 2021): tau = 0 (plain
    averaged gradients), AND-mask, its geometric-mean variant and GEN-mask, seed by seed."""
    return [config_run(f"{m}_s{s}", "spiral", s, epochs, flags, variant=m)
            for s in seeds for m, flags in SPIRAL_FLAGS.items()]


def real_images_plan(epochs=None, seeds=CONFIG_SEEDS["real_images"]):
    """LNL's real-image benchmarks (Kim et al., CVPR 2019, §4.2-4.3) with the two-stage
    recipe of Colored MNIST (stage_flags): the baseline, then LNL from its last checkpoint,
    for each benchmark and split."""
    plan = []
    for seed in seeds:
        for bench, splits in REAL_IMAGES.items():
            for split in splits:
                name = f"{bench}_{split}_seed{seed}"
                plan += [config_run(f"{name}_{v}", bench, seed, epochs,
                                    ["--bias_split", split, *stage_flags(v)], v, False,
                                    after=f"{name}_baseline" if v == "lnl" else None)
                         for v in ("baseline", "lnl")]
    return plan


CONFIG_PLANS = {"irm_cmnist": irm_plan, "andmask_synthetic": andmask_plan,
                "real_images": real_images_plan}


if __name__ == "__main__":  # `python scripts/plans.py stage VARIANT`: the recipe's flags
    import sys
    if len(sys.argv) != 3 or sys.argv[1] != "stage" or sys.argv[2] not in CMNIST_VARIANTS:
        sys.exit(f"usage: python scripts/plans.py stage {{{','.join(CMNIST_VARIANTS)}}}")
    print("\n".join(stage_flags(sys.argv[2])))
