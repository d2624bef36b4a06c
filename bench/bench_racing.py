"""Racing seeds: the same decisions from fewer children, on a grid where some learning rates are clearly worse.

One question ("which learning rate, and is the difference real?") answered two ways, side by
side in one process and one SQLite store (two experiments), on the demo data:

- a fixed grid: every learning rate trains `max_repeats` seeds;
- racing: every learning rate trains `repeats` seeds, then only the comparisons still
  undecided get one more seed per round, up to `max_repeats` (sweep/racing.py).

It counts the children each trained, their wall time, and compares the verdicts (per learning
rate: best, worse, equivalent, within_noise, cannot_tell). `deterministic=true`, so one seed of
one configuration gives the same run both ways: racing's runs are the fixed grid's first seeds,
and where both end with the same seeds they must give the same verdict.

    python bench/bench_racing.py [--lrs 1e-2,3e-3,1e-4,1e-7,1e-8,1e-9] [--repeats 3] [--max-repeats 8] [--epochs 4]

Why 3 seeds first: with 2 seeds a side, Welch's interval has about one degree of freedom (t =
12.7), so even a rate at chance is rarely told apart from the best and racing would add a seed
to everything. The default grid is the demo's (batch 16): two good rates that stay close (1e-2,
3e-3: within noise of each other at 4 seeds in `make demo-sweep`), 1e-4 clearly worse, 1e-7 to
1e-9 at chance: at worst (the close pair never decided) racing trains 6x3 + 2x5 = 28 children
against 6x8 = 48, 42 % fewer. (At batch 32 and 1 to 3 epochs every rate stays at chance, which
would make any comparison trivially "equivalent".)

Exits 1 when racing trained less than --min-saved (0.4) fewer children, or a verdict differs:
a contender racing decided (worse or equivalent) must have the same verdict in the fixed grid,
and the best must be the same learning rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

SMALL = ["--stages", "scratch", "--data", "demo", "--image_size", "64", "--alpha", "0.35", "--weights", "none", "--batch_size", "16",
         "--deterministic", "true"]  # fmt: skip


def run(experiment: str, args, repeats: int, max_repeats: int) -> tuple[int, float, dict[float, tuple[str, int]]]:
    """(children trained, seconds, {lr: (verdict, n)})."""
    import mlflow

    from sweep import best
    from sweep.cli import main
    from train import contract

    started = time.perf_counter()
    code = main(["--lrs", args.lrs, "--epochs", str(args.epochs), *SMALL, "--repeats", str(repeats), "--max-repeats", str(max_repeats),
                 "--margin", str(args.margin), "--experiment", experiment])  # fmt: skip
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"sweep {experiment} exited {code}")
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'", output_format="list")
    comparison = best.compare(runs, args.margin)
    verdicts = {float(row["lr"]): (row["verdict"], int(row["n"])) for _, row in comparison.table.iterrows()}
    return len(runs), seconds, verdicts


def agree(fixed: dict, raced: dict) -> list[str]:
    """The learning rates whose answers differ: another best, or a decided verdict the fixed grid does not give."""
    from app.analysis import stats

    differ = []
    for lr, (verdict, _) in raced.items():
        other = fixed.get(lr, ("missing", 0))[0]
        if (verdict == stats.BEST) != (other == stats.BEST) or (verdict in stats.DECIDED and verdict != other):
            differ.append(f"lr {lr:g}: racing {verdict}, fixed grid {other}")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="1e-2,3e-3,1e-4,1e-7,1e-8,1e-9")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-repeats", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.05, help="72 validation images: one image is 1.4 points of accuracy")
    parser.add_argument("--min-saved", type=float, default=0.4)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="bench-racing-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)
    load = os.getloadavg()[0]

    fixed = run("fixed", args, args.max_repeats, args.max_repeats)
    raced = run("racing", args, args.repeats, args.max_repeats)
    print(f"\ngrid lr={args.lrs}, {args.epochs} epochs, 64 px, demo data, margin {args.margin:g}; load average {load:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'':34}{'children':>9}{'seconds':>9}  verdicts (lr: verdict n)")
    for name, (children, seconds, verdicts) in ((f"fixed grid, {args.max_repeats} seeds each", fixed), (f"racing {args.repeats} -> {args.max_repeats} seeds", raced)):
        said = ", ".join(f"{lr:g}: {verdict} {n}" for lr, (verdict, n) in sorted(verdicts.items()))
        print(f"{name:34}{children:>9}{seconds:>9.0f}  {said}")
    saved, time_saved = 1 - raced[0] / fixed[0], 1 - raced[1] / fixed[1]
    differ = agree(fixed[2], raced[2])
    print(f"racing trained {fixed[0] - raced[0]} of {fixed[0]} children fewer ({saved:.0%}) in {time_saved:.0%} less wall time "
          f"({raced[1] / fixed[1]:.2f}x); verdicts {'agree' if not differ else 'DIFFER: ' + '; '.join(differ)}")  # fmt: skip
    return 0 if saved >= args.min_saved and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
