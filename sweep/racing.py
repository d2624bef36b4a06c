"""Seeds until decided: racing (F-Race, irace) applied to the seeds of a grid phase.

A plan with `max_repeats` above `repeats` trains every configuration `repeats` times first (a
round). Then, per stage, every comparison with the stage's best that is still undecided
(`within_noise` or `cannot_tell`, app/analysis/stats.py `undecided_pairs`) gets one more seed
for both of its groups, the best and the contender; the verdicts are computed again, and so on
until every comparison is decided (`worse` or `equivalent`) or its undecided groups hold
`max_repeats` seeds. A clearly worse learning rate stops at `repeats` seeds; only the close
calls pay for more.

Each extra seed is a configuration + seed like any other: its key (`config_key`) is claimed
before it trains (sweep/claims.py), so workers sharing a storage split a round between them.
A round is decided only once no seed of the phase is running on any worker, from the runs in
the tracking store, so every worker computes the same next round from the same runs, and a
seed two workers both pick is trained once. Pruned, failed and killed children are not seeds
(stats leaves them out); a failed seed's slot is not retried in the same launch, the next one
is used, and `max_repeats` children per configuration is the cap either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.plan import Phase, config_key
from train import contract
from train.config import TrainConfig


@dataclass
class Arm:
    """One configuration of a grid phase (its values without the seed) and every seed it may get."""

    values: dict
    seeds: list[int]
    keys: list[str]  # sweep keys, one per seed; the first `repeats` are the ones the grid trains

    def work(self, index: int) -> tuple[str, dict]:
        return self.keys[index], {**self.values, contract.PARAM_SEED: self.seeds[index]}


def arms(phase: Phase, max_repeats: int) -> list[Arm]:
    """The phase's configurations grouped by everything but the seed, each with `max_repeats` seeds:
    first the grid's own (their keys exactly as the grid trains them), then seed+repeats, ..."""
    grouped: dict[str, Arm] = {}
    for values in phase.configurations():
        rest = {k: v for k, v in values.items() if k != contract.PARAM_SEED}
        arm = grouped.setdefault(config_key(phase.name, rest), Arm(rest, [], []))
        arm.seeds.append(int(values.get(contract.PARAM_SEED, TrainConfig.seed)))
        arm.keys.append(config_key(phase.name, values))
    for arm in grouped.values():
        while len(arm.seeds) < max_repeats:
            seed = max(arm.seeds) + 1
            arm.seeds.append(seed)
            arm.keys.append(config_key(phase.name, {**arm.values, contract.PARAM_SEED: seed}))
    return list(grouped.values())


@dataclass
class Round:
    """What one look at a phase's runs decided: the seeds to train next and where every comparison stands."""

    work: list[tuple[str, dict]] = field(default_factory=list)  # (key, values) to claim and train
    undecided: list[str] = field(default_factory=list)  # "scratch: lr 1e-2 vs lr 3e-3 (within_noise, n 3/3)"
    capped: list[str] = field(default_factory=list)  # undecided, and no seed left to add
    decided: list[str] = field(default_factory=list)  # "scratch: lr 1e-4 worse than lr 3e-3 (n 2/3)"


def next_round(phase_arms: list[Arm], comparison, run_keys: dict[str, str], taken: set[str], max_repeats: int) -> Round:
    """One more seed for both groups of every undecided comparison in `comparison` (stats.compare of
    the phase's runs), unless a group is at the cap. `run_keys`: run id -> its sweep key; `taken`:
    keys already claimed or finished by any worker (their seed slot is used)."""
    from app.analysis import stats

    by_key = {key: arm for arm in phase_arms for key in arm.keys}
    outcome, chosen = Round(), {}
    pairs = stats.undecided_pairs(comparison)
    for pair in pairs:
        grows = [_one_more(side, by_key, run_keys, taken, max_repeats, chosen, outcome.work) for side in (pair.best, pair.contender)]
        line = f"{pair.stage}: {pair.contender.label} vs {pair.best.label} ({pair.verdict.replace('_', ' ')}, n {pair.contender.n} and {pair.best.n})"
        (outcome.undecided if any(grows) else outcome.capped).append(line)
    undecided = {pair.contender.key for pair in pairs}
    for index, row in comparison.table.iterrows():
        if row["verdict"] in stats.DECIDED and comparison.details.loc[index, "key"] not in undecided:
            outcome.decided.append(f"{row['stage']}: {row['group']} {row['verdict']} (n {row['n']})")
    return outcome


def _arms_of(side, by_key: dict, run_keys: dict[str, str]) -> list[Arm]:
    """The phase's configurations a stats group's runs came from (one, unless the plan varies a
    param the stage ignores: then several configurations are one group)."""
    found: dict[int, Arm] = {}
    for run_id in side.run_ids:
        arm = by_key.get(run_keys.get(run_id, ""))
        if arm is not None:
            found.setdefault(id(arm), arm)
    return list(found.values())


def _one_more(side, by_key: dict, run_keys: dict[str, str], taken: set[str], max_repeats: int, chosen: dict, work: list) -> bool:
    """Add the next free seed of the group's configuration to `work`, once per round however many
    pairs the group is in (the best is in every pair of its stage). False: the group is at the cap."""
    if side.key in chosen:
        return chosen[side.key]
    grows = False
    if side.n < max_repeats:
        free = [arm.work(index) for arm in _arms_of(side, by_key, run_keys) for index, key in enumerate(arm.keys) if key not in taken]
        if free:
            work.append(free[0])
            grows = True
    chosen[side.key] = grows
    return grows


def budget_line(plan) -> str:
    """Printed before the first child: what racing may cost at worst."""
    first, worst = plan.size(), plan.worst_case()
    return (f"sweep: racing seeds: {plan.repeats} per configuration first, then one more for both groups of every undecided "
            f"comparison, up to {plan.max_repeats}: {first} children now, at most {worst} ({worst - first} more) if nothing is decided "
            f"(margin ±{plan.margin:g})")


def closing_lines(phase: str, step: Round, added: int, max_repeats: int) -> list[str]:
    """Where racing left a phase: what was decided, and what stopped at the cap undecided."""
    lines = [f"sweep: racing in phase '{phase}' ended after {added} extra seed(s): {len(step.decided)} comparison(s) decided, "
             f"{len(step.capped)} stopped at the cap (max_repeats {max_repeats}) undecided"]
    lines += [f"  decided: {line}" for line in step.decided]
    lines += [f"  at the cap: {line}" for line in step.capped]
    return lines
