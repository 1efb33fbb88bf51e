"""A trial's failures told apart: the infrastructure's (retried without counting) and the trial's own.

Infrastructure: the trial did nothing wrong. Its node died, its actor was lost or unreachable, its worker was
killed by a signal or by Ray's memory monitor, or the storage could not be reached. The trial's own: an exception
its training code raised (a non-finite loss, a config Ray Tune's search produced that cannot run, a bug).

Ray Tune counts both against `FailureConfig.max_failures`, and one node death can count twice: Ray has been seen to
report two ActorUnavailableErrors for one trial 14-21 ms apart, and Tune counts each
(ray/tune/execution/tune_controller.py, _process_trial_failure: `handle_error` counts, then `should_recover`
compares the count with max_failures; the first report requeues the trial, the second errors it).
`retrying_infrastructure` wraps Tune's Trial.handle_error for the duration of a sweep: an infrastructure failure
leaves `num_failures` as it was and counts in the trial's `infra_retries` instead, up to a bound of its own; Tune
then recovers the trial from its last checkpoint as it does any retry. That is the one place where a failure is
counted, whichever path it came by (a task's future, the actor's own death, a failed restore), so once or twice
makes no difference. The class and the count live in the trial's run metadata, which Tune saves with its experiment
state: a rerun reads them back.

On a rerun, Tune resumes an errored trial only if told to resume every errored trial (Tuner.restore,
resume_errored). `resuming_errored` wraps TuneController._requeue_restored_trials, where Tune sorts the restored
trials by status: an errored trial that failed for the infrastructure (or any, with --retry-errored) is handed to
it as an unfinished one, which Tune resumes from its last checkpoint; the others stay errored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ray import exceptions as ray_errors
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial

from cldst.schema import FAILURES

INFRASTRUCTURE, OWN = FAILURES
# Ray's errors for work lost with a node, an actor (died, unreachable, or killed with its worker by a signal or
# by the memory monitor), a worker or an object, or a task that no node can take any more.
RAY_INFRASTRUCTURE = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.NodeDiedError,
                      ray_errors.LocalRayletDiedError, ray_errors.OutOfMemoryError, ray_errors.ObjectLostError,
                      ray_errors.RaySystemError, ray_errors.ActorUnschedulableError)
# Storage out of reach: pyarrow's filesystems (hence Tune's checkpoint uploads and downloads) raise a plain OSError
# with the transport's message, e.g. "AWS Error NETWORK_CONNECTION ... curlCode: 7, Couldn't connect to server".
UNREACHABLE = re.compile(r"NETWORK_CONNECTION|Couldn't connect|Connection refused|Could not resolve host|"
                         r"Connection reset|timed out", re.IGNORECASE)


def cause(err: BaseException) -> BaseException:
    """The exception the trial raised, out of Ray's RayTaskError around it."""
    inner = getattr(err, "cause", None) if isinstance(err, ray_errors.RayTaskError) else None
    return inner if isinstance(inner, BaseException) else err


def classify(err: BaseException | None) -> str:
    """INFRASTRUCTURE if `err`, or an exception it was raised from, is a lost node, actor, worker or object, or
    unreachable storage; OWN otherwise (no exception at all included)."""
    seen: set[int] = set()
    pending = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (*RAY_INFRASTRUCTURE, ConnectionError, TimeoutError)) or (
                isinstance(current, OSError) and UNREACHABLE.search(str(current))):
            return INFRASTRUCTURE
        pending += [cause(current), current.__cause__, current.__context__]
    return OWN


def one_line(err: BaseException) -> str:
    """'Type: the first line of its message' (Ray's messages about a lost actor run to a dozen lines)."""
    inner = cause(err)
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return f"{type(inner).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:500]


def infra_retries(trial: Trial) -> int:
    """The infrastructure failures of `trial` retried without counting against max_failures (this driver's and,
    through Tune's saved state, the killed drivers' before it)."""
    return getattr(trial.run_metadata, "infra_retries", 0)


def failure_of(trial: Trial) -> str | None:
    """The class of `trial`'s last failure, as retrying_infrastructure recorded it (None: it never failed)."""
    return getattr(trial.run_metadata, "failure", None)


@contextmanager
def retrying_infrastructure(max_retries: int) -> Iterator[None]:
    """For the duration of the block, a trial's infrastructure failures do not count against Tune's max_failures,
    up to `max_retries` of them per trial; past that they count as Tune counts any failure."""
    handle_error = Trial.handle_error

    def counted_apart(trial: Trial, exc: BaseException | None = None) -> None:
        metadata = trial.run_metadata
        before = metadata.num_failures
        handle_error(trial, exc)
        metadata.failure = classify(exc)
        if metadata.failure == INFRASTRUCTURE and metadata.num_failures > before and infra_retries(trial) < max_retries:
            metadata.num_failures = before
            metadata.infra_retries = infra_retries(trial) + 1

    with _replaced(Trial, "handle_error", counted_apart):
        yield


@contextmanager
def resuming_errored(retry_own: bool, said: Callable[[str], None] = print) -> Iterator[None]:
    """For the duration of the block, a rerun resumes the errored trials whose last failure was the
    infrastructure's (and, with `retry_own`, every errored trial) from their last checkpoints, each with a fresh
    count of failures; `said` gets one line on how many resume and how many stay failed."""
    requeue = TuneController._requeue_restored_trials

    def resuming(controller: TuneController, trials: list, resume_config: object) -> None:
        errored = [trial for trial in trials if trial.status == Trial.ERROR]
        resumed = [trial for trial in errored if retry_own or failure_of(trial) == INFRASTRUCTURE]
        for trial in resumed:
            trial.run_metadata.num_failures = trial.run_metadata.infra_retries = 0
            trial.set_status(Trial.PAUSED)  # unfinished: Tune resumes it from its checkpoint
        if errored:
            kept = len(errored) - len(resumed)
            said(f"resuming {len(resumed)} errored trial(s) from their checkpoints "
                 f"({'--retry-errored' if retry_own else 'those lost to the infrastructure'}); {kept} stay failed"
                 + ("" if retry_own or not kept else " (their own errors: --retry-errored retries them)"))
        requeue(controller, trials, resume_config)

    with _replaced(TuneController, "_requeue_restored_trials", resuming):
        yield


@contextmanager
def _replaced(owner: type, name: str, replacement: Callable) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)
