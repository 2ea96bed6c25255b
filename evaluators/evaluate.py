"""Evaluate one design point: the hardware model first, then (if feasible) brief training.

This is the function a Ray worker runs. It is a pure function of its arguments: it reads no
global state, writes nothing to disk and never touches the study storage; the trained
weights travel back inside the returned :class:`EvalResult`.
"""

from __future__ import annotations

import time

from evaluators.specs import Budgets, DesignPoint, EvalResult, HardwareReport, TaskSpec


def price(design: DesignPoint, deploy_input: int | None = None,
          input_density: dict[str, float] | None = None) -> HardwareReport:
    """The hardware model alone: the design's network as a workload on its accelerator.

    Args:
        deploy_input: the deployment resolution (``TaskSpec.deploy_input``; ``None``: the
            training resolution).
        input_density: each layer's non-zero input fraction, as training measured it
            (``TrainingReport.input_density``); ``None``: dense inputs.

    An FPGA engine over its DSP / BRAM budget is priced all the same; its
    ``report.resources`` carry the overshoot, which ``constraint_values`` turns into
    constraints.
    """
    from evaluators.hardware import make_model
    from evaluators.training import extract_layers

    model = make_model(design.accelerator, enforce_budgets=False)
    return model.evaluate_network(extract_layers(design.network, deploy_input, input_density))


# a constraint value that stands for "cannot fit at all" (Optuna needs a finite number)
NO_FIT = 1e9


def constraint_values(report: HardwareReport, budgets: Budgets) -> dict[str, float]:
    """``(value - budget) / budget`` for every set budget, and ``used / budget - 1`` for
    every budgeted resource of a programmable device (``dsp``, ``bram36``): feasible iff
    all are <= 0."""
    values = report.metrics()
    out = {}
    for name, budget in budgets.to_dict().items():
        if budget is not None:
            out[name] = (values[name] - budget) / budget
    for name, value in report.resource_constraints().items():
        out[name] = min(value, NO_FIT)
    return out


def violation(report: HardwareReport, budgets: Budgets, name: str) -> str:
    """One budget overshoot in words."""
    r = (report.resources or {}).get(name)
    if r is not None:
        return f"{name} {r['used']} > budget {r['budget_count']} of {r['available']}"
    return f"{name} {getattr(report, name):.4g} > budget {getattr(budgets, name):.4g}"


def evaluate(
    design: DesignPoint,
    task: TaskSpec,
    budgets: Budgets,
    *,
    cached_accuracy: float | None = None,
    cached_input_density: dict[str, float] | None = None,
    init_state: bytes | None = None,
) -> EvalResult:
    """Price ``design`` on its accelerator, then train its network unless that is pointless.

    The hardware is priced first with dense inputs, and the budgets are checked on that
    pricing (so an over-budget design is never trained). Zero inputs only save energy (data
    gating changes no cycle, no mapping and no area), so dense pricing is an upper bound: a
    trained design is priced again with the non-zero input fractions its training measured,
    and that report and its constraint values (never above the dense ones) are what the
    result carries. On a cache hit the cached training's fractions are known up front, and the
    one pricing (budgets included) uses them.

    Args:
        design: the network + accelerator to evaluate.
        task: dataset, training budget, device and seed.
        budgets: area/power/latency budgets; a design over any of them is not trained.
        cached_accuracy: the validation accuracy of the same network trained earlier in this
            study (the driver's training cache); when given, training is skipped.
        cached_input_density: that training's measured input densities (priced as above).
        init_state: warm-start weights for training (``torch.save`` bytes of a state dict),
            chosen by the driver (``task.warm_start``).

    Raises:
        InfeasibleDesign: the accelerator cannot run the workload at all.
        TrainingFailed: training diverged or could not run.
    """
    # a cached training's zeros are known before anything runs: price with them at once
    known = cached_input_density if cached_accuracy is not None else None
    t0 = time.perf_counter()
    report = price(design, task.deploy_input, known or None)
    hw_seconds = time.perf_counter() - t0
    constraints = constraint_values(report, budgets)
    violated = [k for k, v in constraints.items() if v > 0]
    key = design.training_key(task)
    common = dict(hardware=report, constraints=constraints, training_key=key,
                  hw_seconds=hw_seconds)
    if violated:
        reason = ", ".join(violation(report, budgets, k) for k in violated)
        return EvalResult(feasible=False, accuracy=0.0, infeasible_reason=reason, **common)
    if cached_accuracy is not None:
        return EvalResult(feasible=True, accuracy=cached_accuracy, cached=True, **common)
    from evaluators.training import train

    training = train(design.network, task, init_state)
    common |= _with_density(design, task, budgets, training.input_density)
    return EvalResult(feasible=True, accuracy=training.val_accuracy, training=training, **common)


def _with_density(design: DesignPoint, task: TaskSpec, budgets: Budgets,
                  density: dict[str, float] | None) -> dict[str, object]:
    """The ``hardware`` and ``constraints`` of ``design`` priced with measured input densities
    (nothing when none were measured)."""
    if not density:
        return {}
    report = price(design, task.deploy_input, density)
    return {"hardware": report, "constraints": constraint_values(report, budgets)}
