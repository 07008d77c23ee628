"""Declared flags: each method (methods.py) and each dataset (dataset_specs.py) lists the flags
it reads as Option(name, default, help, range) next to its own code. main.build_parser turns
every owner's list into one argument group, and check_ranges refuses a value outside its
declared range with one line before anything runs. A new method or dataset thus brings its
flags with it; the parser and main.py never change for it.
"""
import argparse
from dataclasses import dataclass

# What a flag is to a run, declared with the flag (main.build_parser's add(), Option.role) and
# read by checkpoints.py when a run resumes or loads a checkpoint:
ARCHITECTURE = "architecture"  # fixes the saved networks' shapes: every checkpoint must match
DEFINES = "defines"            # what the run is (data, method, seed): a resumed run keeps it
RECIPE = "recipe"              # how it learns (lr, method weights): a resumed run keeps the
#                                checkpoint's value, with a warning
DRIVES = "drives"              # how it is driven (epochs, device, logging): may change on resume
ROLES = (ARCHITECTURE, DEFINES, RECIPE, DRIVES)


@dataclass(frozen=True)
class Option:
    """One flag. range is None or one of: "> 0", ">= X", "[a, b]", "(a, b)", "[a, b)", "(a, b]"
    (a number outside it is an error); choices restricts the value to a list; switch makes an
    on/off flag (default off). type defaults to the type of default (str for None)."""

    name: str
    default: object = None
    help: str = ""
    range: str = None
    choices: tuple = None
    type: type = None
    switch: bool = False
    role: str = None  # None: the owner's (a dataset's flags define the run, a method's are
    #                   its recipe)

    def add_to(self, group):
        if self.switch:
            return group.add_argument(f"--{self.name}", action="store_true", help=self.help)
        kind = self.type or (str if self.default is None else type(self.default))
        return group.add_argument(f"--{self.name}", type=kind, default=self.default,
                                  choices=self.choices, help=self.help)

    def problem(self, value):
        """Why value lies outside the declared range, or None."""
        if self.range is None or value is None or isinstance(value, bool):
            return None
        spec = self.range.replace(" ", "")
        if spec.startswith(">"):
            strict, bound = not spec.startswith(">="), float(spec.lstrip(">="))
            if value > bound or (value == bound and not strict):
                return None
            if bound == 0:
                return "must be positive" if strict else "must not be negative"
            return f"must be {'greater than' if strict else 'at least'} {spec.lstrip('>=')}"
        low, high = (float(v) for v in spec[1:-1].split(","))
        above = value > low if spec[0] == "(" else value >= low
        below = value < high if spec[-1] == ")" else value <= high
        return None if above and below else f"must lie in {self.range}"


def add_groups(parser, flag, owners, role):
    """Argument groups titled "<flag> <owner>" for owners = {owner name: its options}, each
    flag's role recorded in parser.roles (its Option's, else `role`). An option declared by
    several owners (the same Option, e.g. the real-image datasets' --image_size) is added
    once, in a group named after all of them."""
    holders = {}
    for owner, options in owners.items():
        for option in options:
            holders.setdefault(option, []).append(owner)
    groups = {}
    for option, names in holders.items():
        title = f"{flag} {', '.join(names)}"
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        action = option.add_to(groups[title])
        parser.roles[action.dest] = option.role or role


def check_ranges(parser, args, options):
    """parser.error (one line, exit 2) for the first declared option whose value is out of
    range. Every owner's options are checked, whichever method and dataset the run uses, so a
    bad value is never silently carried into args.json."""
    for option in options:
        problem = option.problem(getattr(args, option.name, None))
        if problem:
            parser.error(f"--{option.name} {problem}; got {getattr(args, option.name)}")


class FromDataset:
    """Default of a flag whose value the dataset spec supplies (the flag then overrides it);
    shown by --help as the default dataset's value."""

    def __init__(self, example):
        self.example = example

    def __repr__(self):
        return f"--dataset_name's own; {self.example}"


def is_unset(value):
    return isinstance(value, FromDataset)



def sigma2(text):
    """argparse type: a Colored-MNIST sigma^2 in (0, 1), as the papers print it ("0.020")."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sigma^2 in (0, 1)")
    name = f"{value:.3f}"
    if float(name) != value:  # 0.0201 would train and be named as 0.020, 1e-9 as 0.000
        raise argparse.ArgumentTypeError(
            f"{text!r} has more digits than a run's name keeps (three decimals: {name}); pass "
            "a sigma^2 written with three decimals, e.g. 0.020")
    return name


def share(text):
    """argparse type: a share written with at most six significant digits, as a cache's and a
    table cell's name keep it (0.0100000001 would train on 0.01's cache as a cell of its own)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if float(f"{value:g}") != value:
        raise argparse.ArgumentTypeError(
            f"{text!r} has more digits than a run's name keeps ({value:g}); pass {value:g}")
    return value

