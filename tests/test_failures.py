"""Trial failures told apart (cldst.failures): the infrastructure's are retried without counting against
--max-failures, once or twice reported, and resume on a rerun; the trial's own count, and stay failed."""

import errno

import pytest
from ray import exceptions as ray_errors
from ray.tune import ResumeConfig
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial

from cldst import failures
from cldst.config import ConfigError
from cldst.continual import TrainingError


def in_task(err: BaseException) -> ray_errors.RayTaskError:
    """`err` as Tune receives it when the training code raised it: wrapped in a RayTaskError."""
    return ray_errors.RayTaskError("train", "Traceback ...", err)


UNAVAILABLE = ray_errors.ActorUnavailableError("the node of the actor died\nmore details", None)
INFRASTRUCTURE = [ray_errors.ActorDiedError(), UNAVAILABLE, in_task(UNAVAILABLE),
                  ray_errors.NodeDiedError("node 1 died"), ray_errors.OutOfMemoryError("killed by the memory monitor"),
                  ray_errors.WorkerCrashedError(), OSError("AWS Error NETWORK_CONNECTION: curlCode: 7"),
                  in_task(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))]
OWN = [TrainingError("loss became nan in task 0, epoch 0"), in_task(TrainingError("loss became nan")),
       in_task(RuntimeError("simulated crash in task 2")), ConfigError("density: must be in (0, 1]"),
       in_task(OSError(errno.ENOSPC, "No space left on device")), KeyError("lr"), None]


@pytest.mark.parametrize("err", INFRASTRUCTURE, ids=lambda e: type(failures.cause(e)).__name__)
def test_a_lost_node_actor_worker_or_storage_is_the_infrastructure_s(err):
    assert failures.classify(err) == failures.INFRASTRUCTURE


@pytest.mark.parametrize("err", OWN, ids=lambda e: type(failures.cause(e)).__name__ if e else "none")
def test_what_the_training_code_raised_is_the_trial_s_own(err):
    assert failures.classify(err) == failures.OWN


def test_an_error_raised_from_a_lost_connection_is_the_infrastructure_s():
    try:
        try:
            raise ConnectionResetError("Connection reset by peer")
        except ConnectionResetError as lost:
            raise RuntimeError("checkpoint upload failed") from lost
    except RuntimeError as err:
        assert failures.classify(in_task(err)) == failures.INFRASTRUCTURE


def test_one_line_names_the_type_and_the_first_line():
    assert failures.one_line(in_task(UNAVAILABLE)).startswith("ActorUnavailableError: ")
    assert "\n" not in failures.one_line(in_task(UNAVAILABLE))
    assert failures.one_line(in_task(RuntimeError("boom"))) == "RuntimeError: boom"


@pytest.fixture
def trial(monkeypatch):
    """A new Tune trial with max_failures 1; with no storage it writes no error file (Tune skips it)."""
    monkeypatch.setattr(Trial, "local_path", None)

    def new(max_failures: int = 1) -> Trial:
        member = Trial("__fake", stub=True)
        member.max_failures = max_failures
        return member
    return new


def test_without_the_wrapper_one_node_reported_dead_twice_exhausts_max_failures_1(trial):
    """Tune's own count: the hole the wrapper closes (the first report requeues, the second errors the trial)."""
    lost = trial()
    for _ in range(2):
        lost.handle_error(in_task(UNAVAILABLE))
    assert lost.num_failures == 2 and not lost.should_recover()


def test_infrastructure_failures_do_not_count_against_max_failures_up_to_their_own_bound(trial):
    lost, own = trial(), trial()
    with failures.retrying_infrastructure(max_retries=3):
        for _ in range(2):  # one node death, reported twice
            lost.handle_error(in_task(UNAVAILABLE))
        assert (lost.num_failures, failures.infra_retries(lost), lost.should_recover()) == (0, 2, True)
        assert failures.failure_of(lost) == failures.INFRASTRUCTURE
        lost.handle_error(ray_errors.ActorDiedError())
        lost.handle_error(ray_errors.ActorDiedError())  # past the bound: Tune counts it
        assert (lost.num_failures, failures.infra_retries(lost)) == (1, 3)
        own.handle_error(in_task(RuntimeError("boom")))
        own.handle_error(in_task(RuntimeError("boom")))
        assert (own.num_failures, failures.infra_retries(own), own.should_recover()) == (2, 0, False)
        assert failures.failure_of(own) == failures.OWN
    assert Trial.handle_error is not None and "counted_apart" not in Trial.handle_error.__qualname__


class Requeued:
    """What TuneController._requeue_restored_trials needs of the controller: add_trial."""

    def __init__(self) -> None:
        self.added: list[Trial] = []

    def add_trial(self, added: Trial) -> None:
        self.added.append(added)


def errored(member: Trial, failure: str) -> Trial:
    member.run_metadata.failure = failure
    member.run_metadata.num_failures, member.run_metadata.infra_retries = 2, 20
    member.set_status(Trial.ERROR)
    return member


@pytest.mark.parametrize("retry_own", [False, True])
def test_a_rerun_resumes_the_trials_the_infrastructure_failed_and_with_retry_errored_all(trial, retry_own):
    lost, own, done = errored(trial(), failures.INFRASTRUCTURE), errored(trial(), failures.OWN), trial()
    done.set_status(Trial.TERMINATED)
    said = []
    with failures.resuming_errored(retry_own, said.append):
        TuneController._requeue_restored_trials(Requeued(), [lost, own, done], ResumeConfig())
    assert (lost.status, own.status, done.status) == (
        Trial.PENDING, Trial.PENDING if retry_own else Trial.ERROR, Trial.TERMINATED)
    assert (lost.num_failures, failures.infra_retries(lost)) == (0, 0)  # its counts start afresh
    assert (own.num_failures, failures.infra_retries(own)) == ((0, 0) if retry_own else (2, 20))
    assert said == [f"resuming {2 if retry_own else 1} errored trial(s) from their checkpoints "
                    + ("(--retry-errored); 0 stay failed" if retry_own else
                       "(those lost to the infrastructure); 1 stay failed (their own errors: --retry-errored "
                       "retries them)")]
