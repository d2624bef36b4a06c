"""Pruning: epochs saved on a grid with hopeless learning rates, with the winner unchanged.

The same grid runs twice, side by side in one process and one SQLite store (two
experiments): without pruning, then with Optuna's MedianPruner. It counts the epochs each
sweep trained and reports the best configuration of each.

    python bench/bench_pruning.py [--epochs 8] [--image-size 96] [--lrs 1e-2,3e-3,1e-3,1e-5,1e-7,1e-9]

Wall time is only saved where epochs outweigh a run's fixed cost (the final predictions,
model logging and, for the sweep's first child only, Keras' tracing of the model: later
children share its compiled model, train/model/pool.py): hence 8 epochs at 96 px by default.
Exits 1 when pruning changed the winner or saved less than --min-epochs-saved of the
epochs or --min-time-saved of the wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def run(experiment: str, lrs: str, epochs: int, pruning: str, image_size: int) -> tuple[int, float, float, float]:
    """(epochs trained, best lr, its best val_accuracy, seconds)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from sweep.cli import main
    from train import contract

    started = time.perf_counter()
    code = main(["--lrs", lrs, "--stages", "scratch", "--epochs", str(epochs), "--data", "demo", "--image_size", str(image_size),
                 "--alpha", "0.35", "--weights", "none", "--batch_size", "16", "--pruning", pruning, "--experiment", experiment])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"sweep ({pruning}) exited {code}")
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'", output_format="list")
    client = MlflowClient()
    trained = sum(len(client.get_metric_history(r.info.run_id, contract.VAL_ACCURACY)) for r in runs)
    best = max(runs, key=lambda r: r.data.metrics[contract.BEST_VAL_ACCURACY])
    return trained, float(best.data.params["lr"]), best.data.metrics[contract.BEST_VAL_ACCURACY], seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lrs", default="1e-2,3e-3,1e-3,1e-5,1e-7,1e-9")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--min-epochs-saved", type=float, default=0.4)
    parser.add_argument("--min-time-saved", type=float, default=0.3)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="bench-pruning-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)

    full = run("no-pruning", args.lrs, args.epochs, "none", args.image_size)
    pruned = run("median-pruning", args.lrs, args.epochs, "median", args.image_size)
    print(f"\ngrid lr={args.lrs}, {args.epochs} epochs, {args.image_size} px, demo data")
    print(f"{'':16}{'epochs trained':>16}{'winner lr':>12}{'best val_acc':>14}{'seconds':>10}")
    for name, (epochs, lr, accuracy, seconds) in (("no pruning", full), ("median pruning", pruned)):
        print(f"{name:16}{epochs:>16}{lr:>12g}{accuracy:>14.4f}{seconds:>10.0f}")
    saved, time_saved = 1 - pruned[0] / full[0], 1 - pruned[3] / full[3]
    print(f"pruning saved {full[0] - pruned[0]} of {full[0]} epochs ({saved:.0%}) and {time_saved:.0%} of the wall time "
          f"({pruned[3] / full[3]:.2f}x); winner {'unchanged' if pruned[1] == full[1] else 'CHANGED'}")
    return 0 if pruned[1] == full[1] and saved >= args.min_epochs_saved and time_saved >= args.min_time_saved else 1


if __name__ == "__main__":
    sys.exit(main())
