"""lm-evaluation-harness integration: the `mcub` model (any mcub model, media decoded by mcub's media layer batch
by batch) and lm-eval task configs generated from `tasks/*.yaml`, scored by mcub's own scoring functions.

`python -m mcub.lmeval configs OUT_DIR [--tasks ...]` writes the configs (use them with `--include_path OUT_DIR`);
`lm_eval --model mcub --model_args model=tiny-damc --tasks mcub-sample --include_path OUT_DIR` then runs any mcub
model: installing mcub puts a hook into site-packages that registers `mcub` when lm-eval loads its registry
(mcub/_lm_eval_hook.py). `mcub-lm-eval` and `python -m mcub.lmeval run` are the same command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry

from mcub.data import load_task
from mcub.errors import McubError
from mcub.models.base import PreparedBatch
from mcub.protocols import PROTOCOLS, Answer, get_protocol
from mcub.schema import DataPaths, Sample, ScorerSettings
from mcub.tasks import TaskSpec, load_registry

CONTEXT_PREFIX = "mcub-sample "
NO_SCORER_SETTINGS = ScorerSettings()


def sample_doc(sample: Sample, task: TaskSpec, scoring: ScorerSettings = NO_SCORER_SETTINGS) -> dict[str, Any]:
    """An lm-eval document: the sample itself (media paths resolved), its choices and how it is scored."""
    choices = list(sample.options)
    return {
        "task": sample.task,
        "id": sample.id,
        "prompt": sample.prompt,
        "media": [list(item) for item in sample.media],
        "options": sample.options,
        "answer": sample.answer,
        "meta": sample.meta,
        "error": sample.error,
        "choices": choices,
        "gold_index": choices.index(sample.answer) if sample.answer in choices else -1,
        "paper_match": task.paper_match,
        "scoring": scoring.model_dump(mode="json"),
    }


def doc_to_text(doc: dict[str, Any]) -> str:
    """The request context: the sample, serialised, for the `mcub` model to pose with its media."""
    fields = ("task", "id", "prompt", "media", "options", "answer", "meta", "error")
    return CONTEXT_PREFIX + json.dumps({key: doc[key] for key in fields}, sort_keys=True)


def sample_from_context(context: str) -> Sample:
    if not context.startswith(CONTEXT_PREFIX):
        raise ValueError("the `mcub` model answers only requests of mcub task configs (python -m mcub.lmeval configs)")
    fields = json.loads(context[len(CONTEXT_PREFIX) :])
    return Sample(
        fields["task"], fields["id"], fields["prompt"], tuple((m, p) for m, p in fields["media"]), fields["options"],
        fields["answer"], fields["meta"], fields["error"],
    )  # fmt: skip


def score_results(protocol: str, doc: dict[str, Any], results: list) -> dict[str, float]:
    """lm-eval's results for one document scored by mcub's protocol object: `acc` for choice and class tasks, or
    the task's open-answer metrics (percent) under `open`."""
    from mcub.scorer import ScoringContext

    task = load_registry().tasks[doc["task"]]
    if get_protocol(protocol).decoding(task, 1).kind == "loglik":
        logliks = {key: float(result[0]) for key, result in zip(doc["choices"], results, strict=True)}
        answer = Answer(doc["answer"], doc["options"], None, logliks)
    else:
        answer = Answer(doc["answer"], doc["options"], results[0])
    context = ScoringContext(ScorerSettings.model_validate(doc.get("scoring") or {}))
    outcome = get_protocol(protocol).score(answer, task, context)
    if outcome.scores is not None:
        return dict(outcome.scores)
    return {"acc": float(outcome.correct)}


def process_loglik(doc: dict[str, Any], results: list) -> dict[str, float]:
    """mcub's `loglik` protocol on lm-eval's per-choice log-likelihoods."""
    return score_results("loglik", doc, results)


def process_paper(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """mcub's `paper` protocol (the authors' scorers) on the generated text."""
    return score_results("paper", doc, results)


def process_generate(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """mcub's `generate` protocol (the shared extractor) on the generated text."""
    return score_results("generate", doc, results)


def process_open(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """mcub's `open` protocol (judge-free open-answer metrics) on the generated text."""
    return score_results("open", doc, results)


class McubLM(LM):
    """Any mcub model (`model=<id>`; other model_args are its --model-arg values) behind lm-eval's interface."""

    def __init__(self, model: str = "tiny-damc", batch_size: int | str = 1, device: str | None = None,
                 dtype: str | None = None, seed: int = 0, max_batch_size: int | None = None,
                 **model_args: Any):  # fmt: skip
        """`max_batch_size` is accepted for lm-eval's sake and unused (batches are `batch_size` samples)."""
        super().__init__()
        import torch

        from mcub.models.base import (
            Runtime,
            build_model,
            check_model_args,
            find_model_spec,
            load_model_specs,
            nest_model_args,
            resolve_dtype,
        )

        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            if device is not None:
                print(f"warning: {device} requested but CUDA is not available; running on the CPU", file=sys.stderr)
            device = "cuda" if torch.cuda.is_available() else "cpu"
        spec = find_model_spec(model, load_model_specs())
        overrides = nest_model_args(model_args)
        check_model_args(spec, overrides)
        runtime = Runtime(device, resolve_dtype(spec, device, dtype or "auto"), int(seed))
        self.model = build_model(spec, overrides, runtime)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 1

    def _batches(self, contexts: Iterable[str]):
        """(contexts, prepared batch) for the distinct contexts, `batch_size` at a time, media decoded per batch."""
        from mcub.runner.loading import SampleDataset

        distinct = list(dict.fromkeys(contexts))
        for start in range(0, len(distinct), self.batch_size):
            chunk = distinct[start : start + self.batch_size]
            loaded = list(SampleDataset.for_model([sample_from_context(c) for c in chunk], self.model))
            failed = [item for item in loaded if item.error]
            if failed:
                raise McubError(f"sample {failed[0].sample.id} of {failed[0].sample.task}: {failed[0].error}")
            yield chunk, self.model.prepare([item.sample for item in loaded], [item.media for item in loaded])

    def _check_receipts(self, prepared: PreparedBatch) -> None:
        """lm-eval has no per-sample error: a sample whose media the model did not consume stops the evaluation."""
        from mcub.runner.receipts import receipt_problem

        if not self.model.reads_media:
            return
        receipts = prepared.receipts or [None] * len(prepared.samples)
        for sample, sample_receipts in zip(prepared.samples, receipts, strict=True):
            problem = receipt_problem(sample, sample_receipts)
            if problem is not None:
                raise McubError(f"sample {sample.id} of {sample.task}: {problem}")

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        wanted: dict[str, list[str]] = {}
        for request in requests:
            context, continuation = request.args
            wanted.setdefault(context, []).append(continuation.strip())
        scores: dict[tuple[str, str], float] = {}
        for contexts, prepared in self._batches(wanted):
            continuations = [list(dict.fromkeys(wanted[context])) for context in contexts]
            values_per_context = self.model.loglik(prepared, continuations)
            self._check_receipts(prepared)
            for context, options, values in zip(contexts, continuations, values_per_context, strict=True):
                scores.update({(context, option): value for option, value in zip(options, values, strict=True)})
        return [(scores[(r.args[0], r.args[1].strip())], False) for r in requests]

    def generate_until(self, requests) -> list[str]:
        settings = {request.args[0]: request.args[1] for request in requests}
        texts: dict[str, str] = {}
        for contexts, prepared in self._batches(settings):
            limit = max(int(settings[context].get("max_gen_toks", 128)) for context in contexts)
            generated = self.model.generate(prepared, limit)
            self._check_receipts(prepared)
            for context, text in zip(contexts, generated, strict=True):
                for stop in settings[context].get("until") or []:
                    text = text.split(stop)[0]
                texts[context] = text
        return [texts[request.args[0]] for request in requests]

    def loglikelihood_rolling(self, requests) -> list[float]:
        raise NotImplementedError("mcub models score answers after a prompt, not whole texts")


# Registered by name (not by decorator) so that running this module as __main__, importing it, and the
# site-packages hook (mcub/_lm_eval_hook.py) all register the same target.
model_registry.register("mcub", target="mcub.lmeval:McubLM")


def write_configs(
    out_dir: Path, tasks: list[TaskSpec], paths: DataPaths, scoring: ScorerSettings = NO_SCORER_SETTINGS
) -> list[str]:
    """lm-eval YAML configs (and their documents) for `tasks` and the groups they complete; returns notes on
    tasks left out."""
    import yaml

    (out_dir / "docs").mkdir(parents=True, exist_ok=True)
    (out_dir / "utils.py").write_text(
        '"""Generated by `python -m mcub.lmeval configs`: the functions the task configs name."""\n\n'
        "from mcub.lmeval import (  # noqa: F401\n"
        "    doc_to_text, process_generate, process_loglik, process_open, process_paper\n)\n"
    )
    notes, written = [], []
    for task in tasks:
        try:
            data = load_task(task, paths)
        except McubError as error:
            notes.append(f"{task.name}: left out ({error})")
            continue
        docs = out_dir / "docs" / f"{task.name}.jsonl"
        docs.write_text("".join(json.dumps(sample_doc(s, task, scoring), sort_keys=True) + "\n" for s in data.samples))
        common = {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(docs.resolve())}},
            "test_split": "test",
            "doc_to_text": _Function("utils.doc_to_text"),
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1, "source": f"mcub tasks/{task.family}.yaml"},
        }
        variants = []
        if PROTOCOLS["loglik"].refusal(task) is None:
            variants.append((task.name, {"output_type": "multiple_choice", "doc_to_choice": "choices",
                                         "doc_to_target": "gold_index", "target_delimiter": " ",
                                         "process_results": _Function("utils.process_loglik")}))  # fmt: skip
        generation = {"output_type": "generate_until", "doc_to_target": "answer",
                      "generation_kwargs": {"until": [], "max_gen_toks": 128, "do_sample": False}}  # fmt: skip
        if PROTOCOLS["open"].refusal(task) is None:
            metrics = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in task.metrics]
            variants.append((f"{task.name}-open", {**generation, "metric_list": metrics,
                                                   "process_results": _Function("utils.process_open")}))  # fmt: skip
        if PROTOCOLS["paper"].refusal(task) is None:
            name = task.name if task.answer_type == "text" else f"{task.name}-paper"
            variants.append((name, {**generation, "process_results": _Function("utils.process_paper")}))
        variants.append(
            (f"{task.name}-generate", {**generation, "process_results": _Function("utils.process_generate")})
        )
        for name, specifics in variants:
            _write_yaml(out_dir / f"{name}.yaml", {"task": name, **common, **specifics}, yaml)
        written.append(task.name)
    registry = load_registry()
    for group in registry.groups.values():
        members = [task.name for task in registry.group_tasks(group.name)]
        if all(member in written for member in members):
            aggregate = [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}]
            _write_yaml(out_dir / f"group-{group.name}.yaml",
                        {"group": group.name, "task": members, "aggregate_metric_list": aggregate}, yaml)  # fmt: skip
    return notes


class _Function(str):
    """A value written as lm-eval's `!function module.name` tag."""


def _write_yaml(path: Path, config: dict[str, Any], yaml) -> None:
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))
    path.write_text(yaml.dump(config, Dumper=Dumper, sort_keys=False), encoding="utf-8")


def lm_eval_cli(argv: list[str] | None = None) -> int:
    """lm-eval's own command line, with the `mcub` model registered (the `mcub-lm-eval` command)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return lm_eval_cli(argv[1:])
    import argparse

    from mcub.cli import add_data_arguments, data_paths, run_command, split_names

    parser = argparse.ArgumentParser(prog="mcub lm-eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    configs = commands.add_parser("configs", help="write lm-eval task configs for mcub tasks")
    configs.add_argument("out_dir", type=Path)
    configs.add_argument("--tasks", help="task and group names, comma-separated (default: all)")
    add_data_arguments(configs)
    configs.add_argument("--embedder", help="the sentence embedder (local directory) of the open-answer metrics")
    commands.add_parser("run", help="lm-eval's command line, with the `mcub` model registered")
    args = parser.parse_args(argv)

    def command() -> int:
        registry = load_registry()
        tasks = registry.resolve(split_names(args.tasks)) if args.tasks else list(registry.tasks.values())
        scoring = ScorerSettings(embedder=args.embedder)
        for note in write_configs(args.out_dir, tasks, data_paths(args), scoring):
            print(note, file=sys.stderr)
        print(f"configs in {args.out_dir}; use them with --include_path {args.out_dir}")
        return 0

    return run_command(command)


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
