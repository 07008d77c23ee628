"""How a run's f loses its units, epoch by epoch (issue #41's BlindEye evidence):

    python scripts/dead_units.py outputs/<run>     # a run trained with --save_every 1

For each epoch checkpoint of the run: the share of f's output units that are zero on every one
of --images training images (a ReLU unit there gets no gradient from any loss: it stays
dead), the mean norm of f's features, and the epoch's bias accuracy of h, training and test
accuracy and the largest share of test predictions naming one class (metrics.jsonl).
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from checkpoints import list_checkpoints, read_checkpoint  # noqa: E402
from dataset_specs import build_datasets  # noqa: E402
from errors import UserError  # noqa: E402
from main import build_nets  # noqa: E402
from safe_files import ARGS, METRICS, read_json, read_jsonl  # noqa: E402


def rows(folder, images):
    """(epoch, dead share, mean feature norm, that epoch's metrics) per epoch checkpoint."""
    args = argparse.Namespace(**read_json(os.path.join(folder, ARGS), folder))
    train = build_datasets(args)["train"]
    x = train.__getitems__(list(range(min(images, len(train)))))["x"]
    metrics = {r.get("epoch"): r for r in read_jsonl(os.path.join(folder, METRICS),
                                                     folder)[0]}
    nets = build_nets(args, train.input_shape)
    for path in reversed([p for p in list_checkpoints(os.path.join(folder, "checkpoints"))
                          if os.path.basename(p).startswith("epoch_")]):  # oldest first
        ckpt = read_checkpoint(path)
        nets["f"].load_state_dict(ckpt["nets"]["f"])
        nets.eval()
        with torch.no_grad():
            z = nets["f"](x).flatten(1)
        yield (ckpt["epoch"], float((z.amax(0) <= 0).float().mean()),
               float(z.norm(dim=1).mean()), metrics.get(ckpt["epoch"], {}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run folder (outputs/<run>) with epoch checkpoints")
    p.add_argument("--images", type=int, default=2000, help="training images to read f on")
    opts = p.parse_args(argv)
    try:
        print("epoch  dead   norm  bias_acc  train_acc  test_acc  top_class_share")
        for epoch, dead, norm, m in rows(opts.run, opts.images):
            cells = [m.get(k, float("nan")) for k in ("bias_acc", "train_acc", "test_acc",
                                                      "test_top_class_share")]
            print(f"{epoch:5d}  {dead:.2f}  {norm:6.2f}  " + "  ".join(
                f"{v:8.3f}" for v in cells))
    except (UserError, OSError) as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    main()
