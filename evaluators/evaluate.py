"""Evaluate one design point: the hardware model first, then (if feasible) brief training.

This is the function a Ray worker runs. It is a pure function of its arguments: it reads no
global state, writes nothing to disk and never touches the study storage; the trained
weights travel back inside the returned :class:`EvalResult`.
"""

from __future__ import annotations

import time

from evaluators.specs import Budgets, DesignPoint, EvalResult, HardwareReport, TaskSpec


def price(design: DesignPoint, deploy_input: int | None = None) -> HardwareReport:
    """The hardware model alone: the design's network as a workload on its accelerator.

    Args:
        deploy_input: the deployment resolution (``TaskSpec.deploy_input``; ``None``: the
            training resolution).

    Raises:
        InfeasibleDesign: the accelerator cannot run some layer at all.
    """
    from evaluators.hardware import evaluate_network
    from evaluators.training import extract_layers

    return evaluate_network(extract_layers(design.network, deploy_input), design.accelerator)


def constraint_values(report: HardwareReport, budgets: Budgets) -> dict[str, float]:
    """``(value - budget) / budget`` for every set budget: feasible iff all are <= 0."""
    values = report.metrics()
    out = {}
    for name, budget in budgets.to_dict().items():
        if budget is not None:
            out[name] = (values[name] - budget) / budget
    return out


def evaluate(
    design: DesignPoint,
    task: TaskSpec,
    budgets: Budgets,
    *,
    cached_accuracy: float | None = None,
    init_state: bytes | None = None,
) -> EvalResult:
    """Price ``design`` on its accelerator, then train its network unless that is pointless.

    Args:
        design: the network + accelerator to evaluate.
        task: dataset, training budget, device and seed.
        budgets: area/power/latency budgets; a design over any of them is not trained.
        cached_accuracy: the validation accuracy of the same network trained earlier in this
            study (the driver's training cache); when given, training is skipped.
        init_state: warm-start weights for training (``torch.save`` bytes of a state dict),
            chosen by the driver (``task.warm_start``).

    Raises:
        InfeasibleDesign: the accelerator cannot run the workload at all.
        TrainingFailed: training diverged or could not run.
    """
    t0 = time.perf_counter()
    report = price(design, task.deploy_input)
    hw_seconds = time.perf_counter() - t0
    constraints = constraint_values(report, budgets)
    violated = [k for k, v in constraints.items() if v > 0]
    key = design.training_key(task)
    common = dict(hardware=report, constraints=constraints, training_key=key,
                  hw_seconds=hw_seconds)
    if violated:
        reason = ", ".join(
            f"{k} {getattr(report, k):.4g} > budget {getattr(budgets, k):.4g}" for k in violated
        )
        return EvalResult(feasible=False, accuracy=0.0, infeasible_reason=reason, **common)
    if cached_accuracy is not None:
        return EvalResult(feasible=True, accuracy=cached_accuracy, cached=True, **common)
    from evaluators.training import train

    training = train(design.network, task, init_state)
    return EvalResult(feasible=True, accuracy=training.val_accuracy, training=training, **common)
