"""One end-to-end run under the torch profiler, its stages labelled by the model's modules and the runner's batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def labelled_modules(model) -> dict[str, Any]:
    """The model's modules whose forward passes the profile labels, by label: each encoder and projector, and the
    LLM (one forward per prefill and per new token)."""
    modules = {f"mcub encoder {m}": encoder for m, encoder in model.encoders.items()}
    modules |= {f"mcub projector {m}": projector for m, projector in model.projectors.items()}
    modules["mcub llm forward (prefill, then one per new token)"] = model.lm.llama.model
    return modules


def profile_run(model, run: Callable[[Callable[[Any], Any]], None], table: Path) -> dict[str, Any]:
    """`run(around_batch)` (a run of the runner on `model`, each batch in the scope `around_batch(items)` returns)
    under the torch profiler, its stages labelled through forward hooks of the model's modules and the runner's
    batch scope (`mcub batch`: prepare and answer one batch); writes the operator table (by device time, or host
    time without CUDA) to `table` and returns each stage's host and device milliseconds."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = str(model.lm.device).startswith("cuda")
    open_labels: list[Any] = []

    def enter(label):
        def hook(module, args):
            scope = record_function(label)
            scope.__enter__()
            open_labels.append(scope)

        return hook

    def leave(module, args, output):
        open_labels.pop().__exit__(None, None, None)

    handles = []
    for label, module in labelled_modules(model).items():
        handles += [module.register_forward_pre_hook(enter(label)), module.register_forward_hook(leave)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=activities) as profiler:
            run(lambda items: record_function("mcub batch"))
            if cuda:
                torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
    averages = profiler.key_averages()
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    table.write_text(averages.table(sort_by=sort_by, row_limit=40) + "\n")
    return {
        event.key: {
            "host_ms": event.cpu_time_total / 1000,
            "device_ms": getattr(event, "device_time_total", 0) / 1000,
            "calls": event.count,
        }
        for event in averages
        if event.key.startswith("mcub ")
    }
