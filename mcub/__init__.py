"""mcub: the evaluation harness for MCUB and the auxiliary tasks of Model Composition for MLLMs.

`mcub.evaluate(mcub.EvalRequest(model="tiny-damc", tasks=["mcub-sample"]))` runs an evaluation and returns its
`RunSummary`; `mcub.score_run(run_dir, paths)` rescores a finished run. Both are imported on first use."""

__version__ = "0.1.0"

_LAZY = {
    "evaluate": ("mcub.evaluation", "evaluate"),
    "score_run": ("mcub.evaluation", "score_run"),
    "EvalRequest": ("mcub.request", "EvalRequest"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'mcub' has no attribute {name!r}")
