"""Small engine runs the tests share: a 3-task synthetic config and a run that keeps every task checkpoint."""

from cldst import continual
from cldst.config import RunConfig


def small_config(**overrides) -> RunConfig:
    """3 tasks x 2 classes of the synthetic benchmark, an MLP, 2 epochs: a whole run takes seconds on a CPU."""
    values = dict(benchmark="synthetic", num_tasks=3, classes_per_task=2, num_classes=6, epochs=2, batch_size=32,
                  update_frequency=3, device="cpu")
    return RunConfig(**{**values, **overrides}).resolve()


def run_with_states(cfg: RunConfig, bench, state: dict | None = None) -> tuple[list, list[dict]]:
    """(the TaskResults, the checkpoint state after each task)."""
    states = []
    results = continual.run(cfg, bench, continual.Hooks(on_task_end=lambda r, s: states.append(s)), state)
    return results, states
