"""Run a plan: a parent MLflow run (kind=sweep) with one child run per configuration.

Phases run in order; a phase with `init_from` starts once the phase it depends on is done
(on every worker) and fine-tunes that phase's best run. Each configuration is claimed
before it trains (sweep/claims.py), so workers sharing `storage` split the grid, and a
configuration whose child already FINISHED is skipped, so a re-launched sweep resumes.
A failed child is recorded FAILED and the sweep goes on; SIGTERM/SIGINT stop the sweep.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import signal
import sys
import time
from dataclasses import dataclass, field

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from sweep import best, children, racing
from sweep.claims import DONE, FAILED, Claims
from sweep.filters import quoted
from sweep.plan import Phase, Plan, config_key, make_config
from sweep.plan_values import Range
from sweep.progress import Progress, print_ranking
from sweep.pruning import ClaimLost, ClaimWatch, TrialReporter, make_pruner
from train import contract
from train.errors import TrainingInterrupted
from train.messages import first_line, redact_uri
from train.model.pool import ModelPool
from train.run import interrupt
from train.run.preflight import preflight
from train.run.signals import raising_outside_database_code, stop_signals_to
from train.tracking import runs as tracking
from train.tracking import store as tracking_store


@dataclass
class SweepOptions:
    plan: Plan
    storage: str = ""  # database URL shared by workers (Optuna + claims); "" = this process only
    study: str = ""  # default: <plan name>-<plan key>
    pruning: str = "none"  # none | median | halving
    prune_startup: int = 2
    prune_warmup: int = 1
    register_as: str = ""
    experiment: str = ""
    wait_timeout: float = 24 * 3600  # longest wait for other workers' runs of an earlier phase
    stale_seconds: float = 900  # a claim without a heartbeat for this long may be taken over (sweep/claims.py)

    experiment_id: str = ""  # set once the parent run exists
    models: ModelPool = field(default_factory=ModelPool, repr=False)  # the compiled model children reuse

    @property
    def study_name(self) -> str:
        """The sweep's identity: the same plan in the same experiment resumes, elsewhere starts afresh."""
        return self.study or f"{self.plan.name}-{self.plan.key()}-e{self.experiment_id}"


@dataclass
class SweepResult:
    parent_run_id: str
    trained: list[str] = field(default_factory=list)  # child run ids this worker trained
    failed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # why each failed child failed (first lines)
    lost: list[str] = field(default_factory=list)  # children stopped because another worker took their claim
    verdicts: dict[str, racing.Round] = field(default_factory=dict)  # phase -> where racing left its comparisons
    skipped: int = 0
    registered: dict[str, int] = field(default_factory=dict)  # alias -> model version


def _interrupted(signum):
    raise TrainingInterrupted(signum, None)


# Outside a child's fit() (where the trainer's GracefulStop takes over and finishes the batch) a
# sweep waits for other workers, loads data or builds the next model: nothing worth finishing, and
# the default handlers would end the process with the parent run RUNNING. Not inside a store call:
# raised there, the store stays locked and the parent could not be marked KILLED.
_interrupt = raising_outside_database_code(_interrupted)


def run_sweep(options: SweepOptions) -> SweepResult:
    tracking_store.connect(options.experiment)
    with stop_signals_to(_interrupt), mlflow.start_run(run_name=f"sweep {options.plan.name}", tags={contract.TAG_KIND: contract.KIND_SWEEP}) as parent:
        try:  # from the parent run's first moment: a signal anywhere ends it KILLED, not FAILED
            return _run_plan(options, parent)
        except TrainingInterrupted as stop:
            with stop_signals_to(signal.SIG_IGN):  # a second signal must not cut the bookkeeping short
                children.close_children(parent.info.run_id, f"{stop}; launch the same sweep again to resume")
                mlflow.set_tag(contract.TAG_STOP_REASON, "interrupted; launch the same sweep again to resume")
                mlflow.end_run("KILLED")
            print("sweep interrupted: launch the same command again to resume it (finished runs are skipped)", file=sys.stderr, flush=True)
            raise
        finally:
            _release_models(options)


def _run_plan(options: SweepOptions, parent) -> SweepResult:
    options.experiment_id = parent.info.experiment_id
    mlflow.set_tag(contract.TAG_SWEEP_STUDY, options.study_name)
    claims = Claims(options.study_name, options.storage or None, stale_seconds=options.stale_seconds)
    try:
        _log_parent(options)
        result = SweepResult(parent.info.run_id)
        progress = Progress(options.plan.size())
        for phase in options.plan.phases:
            _run_phase(phase, options, claims, result, progress)
        for phase in options.plan.phases:  # registration and the test split see every worker's runs
            _wait_for_phase(phase, claims, options)
        if options.register_as:
            result.registered = best.register(options.study_name, options.register_as, options.plan.margin, claims)
        best.evaluate_on_test(options.study_name, options.plan.margin, claims)
        mlflow.log_metrics({"children_trained": len(result.trained), "children_failed": len(result.failed), "children_skipped": result.skipped})
        print(progress.final_line(), flush=True)
        print_ranking(options.study_name, best.experiment_ids(), options.plan.margin)
        return result
    finally:
        claims.close()


def _log_parent(options: SweepOptions) -> None:
    plan = options.plan
    mlflow.log_text(plan.to_yaml(), "plan.yaml")
    params = {
        "plan": plan.name,
        "study": options.study_name,
        "configurations": plan.size(),
        "storage": redact_uri(options.storage) if options.storage else "in-process",
        "pruning": options.pruning,
        "register_as": options.register_as,
    }
    tracking.log_params_once({key: str(value) for key, value in params.items()})


def _run_phase(phase: Phase, options: SweepOptions, claims: Claims, result: SweepResult, progress: Progress) -> None:
    init_model = ""
    if phase.init_from:
        source = options.plan.phases[[p.name for p in options.plan.phases].index(phase.init_from["phase"])]
        _wait_for_phase(source, claims, options)
        init_model = best.start_model_uri(options.study_name, phase, options.plan.margin)
    study = _study(options, phase)
    _train(phase, _work(phase), init_model, study, claims, options, result, progress)
    if options.plan.racing and not phase.sampled:
        _race(phase, init_model, study, claims, options, result, progress)


def _train(phase: Phase, work, init_model: str, study: optuna.Study, claims: Claims, options: SweepOptions, result: SweepResult, progress: Progress) -> None:
    finished = children.finished_keys(options.study_name, phase.name)
    for key, values in work:
        if key in finished:
            result.skipped += 1
            progress.skipped(phase.name, "finished earlier")
            continue
        if not claims.claim(key):
            progress.skipped(phase.name, "taken by another worker", count=False)
            continue
        _run_child(phase, key, values, init_model, study, claims, options, result, progress)


def _race(phase: Phase, init_model: str, study: optuna.Study, claims: Claims, options: SweepOptions, result: SweepResult, progress: Progress) -> None:
    """Seeds until decided (sweep/racing.py): after each round, one more seed for both groups of every
    undecided comparison, until all are decided or at max_repeats. Every worker decides a round only
    once no seed of the phase runs anywhere, from the same runs, so they agree on it."""
    plan = options.plan
    arms = racing.arms(phase, plan.max_repeats)
    universe = [key for arm in arms for key in arm.keys]
    added = 0
    for number in itertools.count(1):
        claims.wait_for(universe, f"phase '{phase.name}'", options.wait_timeout)
        runs = best.sweep_runs(options.study_name, f"tags.{contract.TAG_SWEEP_PHASE} = {quoted(phase.name)}", finished=False)
        run_keys = {run.info.run_id: run.data.tags.get(contract.TAG_SWEEP_CONFIG, "") for run in runs}
        taken = set(claims.states(universe)) | set(run_keys.values())
        step = racing.next_round(arms, best.compare(runs, plan.margin), run_keys, taken, plan.max_repeats)
        if not step.work:
            for line in racing.closing_lines(phase.name, step, added, plan.max_repeats):
                print(line, flush=True)
            result.verdicts[phase.name] = step
            return
        print(f"sweep: racing round {number} of phase '{phase.name}': {len(step.undecided)} comparison(s) undecided, "
              f"{len(step.decided)} decided, {len(step.capped)} at the cap; {len(step.work)} more seed(s)", flush=True)
        progress.total += len(step.work)
        added += len(step.work)
        _train(phase, step.work, init_model, study, claims, options, result, progress)


def _work(phase: Phase):
    """(key, values) of every configuration; a sampled phase's values are drawn by Optuna later."""
    if phase.sampled:
        return [(f"{phase.name}-trial-{index}", None) for index in range(phase.trials)]
    return [(config_key(phase.name, values), values) for values in phase.configurations()]


def _study(options: SweepOptions, phase: Phase) -> optuna.Study:
    """The phase's Optuna study: its pruner compares runs of one phase, its sampler draws ranges."""
    name = f"{options.study_name}.{phase.name}"
    pruner = make_pruner(options.pruning, options.prune_startup, options.prune_warmup)
    sampler = optuna.samplers.TPESampler(seed=int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    for attempt in range(5):  # workers started together race to create Optuna's tables
        try:
            return optuna.create_study(study_name=name, storage=options.storage or None, direction="maximize", pruner=pruner, sampler=sampler, load_if_exists=True)
        except Exception:  # noqa: BLE001 - a lost race shows up as any of several SQLAlchemy errors
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


# lrlab's own bugs, not a child's failure: the sweep stops loudly instead of recording a FAILED child
# and going on (a TypeError would fail every child the same way, each after its data preparation).
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, LookupError, AssertionError, ImportError)


def _run_child(phase: Phase, key: str, values: dict | None, init_model: str, study: optuna.Study, claims: Claims, options: SweepOptions, result: SweepResult, progress: Progress) -> None:
    trial = study.ask()
    trial.set_user_attr(contract.TAG_SWEEP_CONFIG, key)
    if values is None:
        values = _sample(trial, phase)
    child_id = children.create_child(options.study_name, phase, key, values)
    trial.set_user_attr("run_id", child_id)
    started = time.monotonic()
    reporter = TrialReporter(trial)
    try:
        with claims.beating(key) as heartbeat:  # on time, not per epoch: data preparation and one epoch can outlast the window
            config = make_config(values, init_model=init_model, experiment=options.experiment)
            checked = preflight(config)
            from train.run.trainer import train  # TensorFlow loads once the first configuration is known good

            match_determinism(config.deterministic)
            outcome = train(config, checked, callbacks=[reporter, ClaimWatch(heartbeat)], run_options={"run_id": child_id, "nested": True}, models=options.models)
    except TrainingInterrupted:
        # The next launch trains this configuration afresh, in a new child: the local checkpoint
        # (NaN weights, or a half-trained model the sweep never resumes) is only disk used.
        _give_up_child(child_id, key, None, claims, study, trial)
        raise
    except ClaimLost as lost:
        _lose_child(child_id, str(lost), study, trial, result)
        progress.lost(phase.label(values), time.monotonic() - started)
        return
    except Exception as error:  # noqa: BLE001 - a child's failure is recorded and the sweep goes on; lrlab's own bugs re-raise
        _give_up_child(child_id, key, error, claims, study, trial)
        if isinstance(error, PROGRAMMING_ERRORS):
            raise
        result.failed.append(child_id)
        result.failures.append(first_line(error))
        progress.failed(phase.label(values), error, time.monotonic() - started)
        return
    finally:
        gc.collect()  # the child's fresh model, datasets and callbacks (the pool keeps one model)
    if not claims.finish(key, DONE):  # taken over between the last beat and now: the other worker's run counts
        _lose_child(child_id, f"claim {key} was taken over by another worker while this child finished", study, trial, result)
        progress.lost(phase.label(values), time.monotonic() - started)
        return
    if reporter.pruned_after is not None:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, outcome.best_val_accuracy)
    result.trained.append(child_id)
    progress.done(phase.label(values), outcome.best_val_accuracy, time.monotonic() - started, pruned=reporter.pruned_after)


def _give_up_child(child_id: str, key: str, error: BaseException | None, claims: Claims, study: optuna.Study, trial) -> None:
    """The child failed (`error`) or was interrupted (None): record it, and whatever recording does,
    release the claim as failed, so no worker waits for a `running` claim nobody trains."""
    try:
        interrupt.remove_checkpoint(child_id)
        if error is not None:
            children.record_failure(child_id, error)
    finally:
        claims.finish(key, FAILED)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _lose_child(child_id: str, reason: str, study: optuna.Study, trial, result: SweepResult) -> None:
    """Another worker owns the configuration now: this child ends KILLED (it never counts as a seed)
    and the claim is left alone, it is not this worker's."""
    interrupt.remove_checkpoint(child_id)
    client = MlflowClient()
    client.set_tag(child_id, contract.TAG_STOP_REASON, reason[:500])
    client.set_terminated(child_id, "KILLED")
    if mlflow.active_run() and mlflow.active_run().info.run_id == child_id:
        mlflow.end_run("KILLED")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    result.lost.append(child_id)


def match_determinism(deterministic: bool) -> None:
    """TensorFlow's op determinism is process-wide and the trainer only turns it on: after one
    `deterministic=true` child every later child of the sweep would be deterministic too. So the
    sweep sets it to what each child asks. TensorFlow's public API has no `disable` (nor a
    getter); its own framework.config functions are the switch (the kept model is safe: `deterministic` is part
    of the pool's graph key, so a model traced under one setting never serves the other)."""
    from tensorflow.python.framework import config as tf_config

    if tf_config.is_op_determinism_enabled() and not deterministic:
        tf_config.disable_op_determinism()


def _sample(trial: optuna.Trial, phase: Phase) -> dict:
    values = dict(phase.fixed)
    for name, choices in phase.grid.items():
        values[name] = trial.suggest_categorical(name, choices)
    if len(phase.variants) > 1:
        values.update(phase.variants[trial.suggest_categorical("variant", list(range(len(phase.variants))))])
    for name, bounds in phase.search.items():
        values[name] = _suggest(trial, name, bounds)
    return values


def _suggest(trial: optuna.Trial, name: str, bounds: Range):
    if bounds.integer:
        return trial.suggest_int(name, int(bounds.low), int(bounds.high), log=bounds.log)
    return trial.suggest_float(name, bounds.low, bounds.high, log=bounds.log)


def _release_models(options: SweepOptions) -> None:
    """The sweep's end: the kept model and Keras' global state go. Not between children:
    clear_session clears TensorFlow's kernel caches, which the kept model's traced steps use."""
    options.models.release()
    if "keras" in sys.modules:  # no child trained: TensorFlow never loaded, nothing to clear
        import keras

        keras.backend.clear_session()


def _wait_for_phase(phase: Phase, claims: Claims, options: SweepOptions) -> None:
    """Block until no worker is still training a configuration (or racing seed) of `phase`."""
    keys = [key for arm in racing.arms(phase, options.plan.max_repeats) for key in arm.keys] if options.plan.racing and not phase.sampled else [key for key, _ in _work(phase)]
    claims.wait_for(keys, f"phase '{phase.name}'", options.wait_timeout)
