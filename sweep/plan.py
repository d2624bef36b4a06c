"""Experiment plans: phases of grids over TrainConfig fields, loaded from YAML, overridable.

A plan is a list of phases. Each phase expands to configurations: the product of its
`grid` (lists) times its `variants` (a list of parameter sets), over its `fixed` values
and the plan's. A `search` (open ranges such as `lr: 1e-7..1e-2:log`) makes the phase
sampled by Optuna instead, `trials` times. A phase with `init_from` fine-tunes the best
run (by best_val_accuracy) of an earlier phase, optionally filtered by params.

    fixed: {epochs: 10}
    phases:
      - name: stages
        grid: {stage: [scratch, full, head], lr: [1e-4, 1e-5, 1e-6]}
      - name: finetune
        fixed: {stage: finetune}
        grid: {lr: [1e-6, 1e-7]}
        init_from: {phase: stages, stage: head}

Values are typed at load, in their TrainConfig field's type (sweep/plan_values.py); the file
is read safely (sweep/plan_file.py: its size, its YAML nodes with aliases expanded); and the
configurations a plan expands to are bounded, each with one line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field

import yaml

from sweep import plan_file
from sweep.plan_values import (
    Range,
    as_list,
    check_quotable,
    check_values,
    convert,
    parse_range,
    typed,
    typed_values,
)
from train import contract
from train.config import ConfigError, TrainConfig

ALIASES = {"lrs": "lr", "stages": "stage", "schedules": "schedule", "seeds": "seed", "models": "model"}
MAX_CONFIGURATIONS = 10_000  # per sweep: weeks of training at a minute each
PLAN_KEYS = ("name", "description", "fixed", "phases", "repeats", "max_repeats", "margin")


@dataclass
class Phase:
    name: str
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    variants: list = field(default_factory=lambda: [{}])
    search: dict = field(default_factory=dict)  # name -> Range
    trials: int = 10
    init_from: dict | None = None  # {"phase": NAME, **param filters}

    @property
    def sampled(self) -> bool:
        return bool(self.search)

    def configurations(self) -> list[dict]:
        """Every grid configuration of the phase, in a stable order (empty when sampled)."""
        if self.sampled:
            return []
        names = list(self.grid)
        combos = itertools.product(*(self.grid[name] for name in names))
        return [{**self.fixed, **dict(zip(names, combo, strict=True)), **variant} for combo in combos for variant in self.variants]

    def label(self, values: dict) -> str:
        """The run's name in the sweep: the phase and what varies in it ("head lr=0.001 seed=2").
        The child run is named so and the progress lines say so."""
        varied = [name for name in dict.fromkeys([*self.grid, *self.search, *(k for v in self.variants for k in v)]) if name in values]
        return " ".join([self.name, *(f"{k}={values[k]:g}" if isinstance(values[k], float) else f"{k}={values[k]}" for k in varied)])

    def size(self) -> int:
        """Without expanding the grid: a plan may ask for more than memory holds."""
        return self.trials if self.sampled else math.prod(len(values) for values in self.grid.values()) * len(self.variants)


@dataclass
class Plan:
    name: str
    phases: list[Phase]
    description: str = ""
    repeats: int = 1  # seeds per configuration in the first round
    max_repeats: int = 0  # racing: seeds an undecided comparison's groups may grow to; 0 = repeats (off)
    margin: float = contract.DEFAULT_MARGIN  # a difference inside ±margin is `equivalent`

    @property
    def racing(self) -> bool:
        return self.max_repeats > self.repeats

    def worst_case(self) -> int:
        """Children when every comparison stays undecided to the cap (racing's budget)."""
        return sum(phase.size() if phase.sampled else phase.size() // self.repeats * max(self.max_repeats, self.repeats) for phase in self.phases)

    def key(self) -> str:
        """A short hash of everything that decides what runs: the same sweep has the same key."""
        payload = json.dumps([_phase_dict(phase) for phase in self.phases], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]

    def size(self) -> int:
        return sum(phase.size() for phase in self.phases)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"name": self.name, "description": self.description, "phases": [_phase_dict(p) for p in self.phases]}, sort_keys=False)


def _phase_dict(phase: Phase) -> dict:
    data = asdict(phase)
    data["search"] = {name: str(value) for name, value in phase.search.items()}
    return data


def config_key(phase: str, values: dict) -> str:
    """Identifies one configuration of a sweep (its child run carries it as a tag)."""
    payload = json.dumps({"phase": phase, **{k: str(v) for k, v in values.items()}}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def load_plan(plan: str) -> Plan:
    path, data = plan_file.read(plan)
    return plan_from_dict(data, default_name=path.stem)


def plan_from_dict(data: dict, default_name: str) -> Plan:
    unknown = set(data) - set(PLAN_KEYS)
    if unknown:
        raise ConfigError(f"plan {default_name}: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(PLAN_KEYS)}")
    shared = typed_values(data.get("fixed") or {}, f"plan {default_name} fixed")
    phases = [_phase(raw, shared, index) for index, raw in enumerate(data["phases"])]
    names = [phase.name for phase in phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"plan {default_name}: phase names must be unique (got {', '.join(names)})")
    for index, phase in enumerate(phases):
        if phase.init_from and phase.init_from.get("phase") not in names[:index]:
            raise ConfigError(f"phase '{phase.name}': init_from.phase must name an earlier phase ({', '.join(names[:index]) or 'none'})")
    for name in names:
        check_quotable(name, "phase name")
    plan = Plan(check_quotable(str(data.get("name") or default_name), "plan name"), phases, str(data.get("description") or ""))
    plan.repeats = _whole(data.get("repeats", 1), f"plan {default_name} repeats")
    plan.max_repeats = _whole(data.get("max_repeats", 0), f"plan {default_name} max_repeats", low=0)
    plan.margin = check_margin(data.get("margin", contract.DEFAULT_MARGIN), f"plan {default_name} margin")
    return plan


def _whole(value, where: str, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_CONFIGURATIONS:
        raise ConfigError(f"{where} must be a whole number from {low} to {MAX_CONFIGURATIONS:,} (got {value!r})")
    return value


def check_margin(value, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 <= value < 1):
        raise ConfigError(f"{where} must be a number from 0 to below 1, in accuracy (got {value!r}); e.g. 0.01: within one point of accuracy is equivalent")
    return float(value)


def _phase(raw: dict, shared: dict, index: int) -> Phase:
    if not isinstance(raw, dict):
        raise ConfigError(f"phase {index + 1} must be a mapping with name, fixed, grid, variants, search, init_from")
    name = str(raw.get("name") or f"phase{index + 1}")
    unknown = set(raw) - {"name", "fixed", "grid", "variants", "search", "trials", "init_from"}
    if unknown:
        raise ConfigError(f"phase '{name}': unknown key(s) {', '.join(sorted(unknown))}")
    where = f"phase '{name}'"
    grid = {key: [typed(key, item, f"{where} grid") for item in as_list(value)] for key, value in check_values(raw.get("grid") or {}, f"{where} grid").items()}
    variants = raw.get("variants") or [{}]
    if not isinstance(variants, list):
        raise ConfigError(f"{where} variants must be a list of parameter sets, e.g. [{{schedule: constant}}, {{schedule: cosine}}]")
    variants = [typed_values(variant, f"{where} variants") for variant in variants]
    search = {key: parse_range(str(value), key) for key, value in check_values(raw.get("search") or {}, f"{where} search").items()}
    fixed = {**shared, **typed_values(raw.get("fixed") or {}, f"{where} fixed")}
    init_from = raw.get("init_from")
    if init_from is not None:
        if not isinstance(init_from, dict) or "phase" not in init_from:
            raise ConfigError(f"phase '{name}': init_from must be a mapping with 'phase' (and optional param filters)")
        typed_values({k: v for k, v in init_from.items() if k != "phase"}, f"phase '{name}' init_from")
    trials = raw.get("trials", 10)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"{where}: trials must be a whole number of at least 1 (got {trials!r})")
    phase = Phase(name, fixed, grid, variants, search, trials, init_from)
    _drop_fixed_shadowed(phase)
    return phase


def _drop_fixed_shadowed(phase: Phase) -> None:
    for key in [*phase.grid, *phase.search, *{k for v in phase.variants for k in v}]:
        phase.fixed.pop(key, None)


def apply_overrides(plan: Plan, overrides: dict[str, str]) -> Plan:
    """`-P key=value` (or `-P phase.key=value`) replaces that key in every phase (or one phase).

    `a,b,c` makes the key a grid axis, `low..high[:log]` an Optuna search range, anything
    else a fixed value. `lrs`, `stages`, `schedules`, `seeds` and `models` are aliases.
    """
    ordered = sorted(overrides.items(), key=lambda item: "." in item[0])  # phase-specific ones win
    for raw_key, text in ordered:
        phase_name, _, key = raw_key.rpartition(".")
        key = ALIASES.get(key, key)
        check_values({key: text}, f"-P {raw_key}")
        targets = [p for p in plan.phases if not phase_name or p.name == phase_name]
        if phase_name and not targets:
            raise ConfigError(f"-P {raw_key}: no phase named '{phase_name}' (phases: {', '.join(p.name for p in plan.phases)})")
        for phase in targets:
            _override(phase, key, str(text))
    return plan


def _override(phase: Phase, key: str, text: str) -> None:
    for variant in phase.variants:
        variant.pop(key, None)
    phase.grid.pop(key, None)
    phase.search.pop(key, None)
    phase.fixed.pop(key, None)
    if ".." in text:
        phase.search[key] = parse_range(text, key)
    elif "," in text and key != "milestones":
        phase.grid[key] = [convert(key, part.strip()) for part in text.split(",") if part.strip()]
    else:
        phase.fixed[key] = convert(key, text)


def add_repeats(plan: Plan, repeats: int, max_repeats: int = 0) -> None:
    """Run every configuration `repeats` times with seeds seed, seed+1, ... as a grid axis
    (racing adds seed+repeats, ... up to `max_repeats` later, sweep/racing.py)."""
    plan.repeats, plan.max_repeats = repeats, max_repeats or repeats
    if plan.max_repeats < repeats:
        raise ConfigError(f"max_repeats ({plan.max_repeats}) must be at least repeats ({repeats}); 0 or equal turns racing off")
    if plan.max_repeats <= 1:
        return
    for phase in plan.phases:
        _one_first_seed(phase, repeats)
        if repeats > 1:
            base = int(phase.fixed.pop("seed", TrainConfig.seed))
            phase.grid["seed"] = [base + i for i in range(repeats)]


def _one_first_seed(phase: Phase, repeats: int) -> None:
    """Seeds come from repeats (seed, seed+1, ...): a list of seeds as well is a contradiction,
    not something to replace in silence. One value in a list is the first seed."""
    listed = phase.grid.get("seed", [])
    if len(listed) == 1:
        phase.fixed["seed"] = phase.grid.pop("seed")[0]
    elif listed or "seed" in phase.search or any("seed" in variant for variant in phase.variants):
        given = ", ".join(str(s) for s in listed) if listed else "a range or variants"
        raise ConfigError(f"phase '{phase.name}': seed is a list ({given}) and repeats is {repeats}; give the first seed (seed: {listed[0] if listed else 42}) with repeats, or the seeds without repeats")


def default_plan(stages: list[str]) -> Plan:
    """The plan of `-e sweep` without `plan=`: one grid over the stages, finetune after head."""
    first = [stage for stage in stages if stage != "finetune"]
    if not first:
        raise ConfigError("stages=finetune needs a stage to fine-tune from: add head (e.g. -P stages=head,finetune), or give -e main -P init_model=...")
    phases = [Phase("train", grid={"stage": first})]
    if "finetune" in stages:
        source = {"phase": "train", **({"stage": "head"} if "head" in first else {})}
        phases.append(Phase("finetune", fixed={"stage": "finetune"}, init_from=source))
    return Plan("grid", phases)


def check_size(plan: Plan) -> None:
    """Before anything expands the grid: empty axes, and racing's worst case counts."""
    for phase in plan.phases:
        for name, values in phase.grid.items():
            if not values:
                raise ConfigError(f"phase '{phase.name}' grid {name} is an empty list; give at least one value, or remove {name}")
    size = plan.worst_case()
    if size > MAX_CONFIGURATIONS:
        raise ConfigError(f"plan {plan.name} asks for {size:,} configurations; a sweep runs at most {MAX_CONFIGURATIONS:,}: split it, or sample a range with trials")


def check_configurations(plan: Plan) -> None:
    """Validate every configuration now (seconds), not after hours of earlier phases."""
    check_size(plan)
    for phase in plan.phases:
        samples = phase.configurations() or [{**phase.fixed, **{k: _midpoint(r) for k, r in phase.search.items()}}]
        for values in samples:
            config = make_config(values, init_model="runs:/placeholder/model" if values.get("stage") == "finetune" else "")
            try:
                config.validate()
            except ConfigError as error:
                raise ConfigError(f"phase '{phase.name}': {error}") from None
            if values.get("stage") == "finetune" and not phase.init_from:
                raise ConfigError(f"phase '{phase.name}' fine-tunes but has no init_from: add init_from: {{phase: NAME}}")


def _midpoint(value: Range):
    middle = math.sqrt(value.low * value.high) if value.log else (value.low + value.high) / 2
    return int(middle) if value.integer else middle


def make_config(values: dict, **extra) -> TrainConfig:
    typed = {key: convert(key, value) for key, value in values.items()}
    return TrainConfig(**{**typed, **extra})
