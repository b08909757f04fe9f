"""A test adapter that records what it receives (prompt, media files, decoded tensors, provenance) and answers a
fixed letter or the gold one; `recording_runner` registers it and runs it on tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import mcub
from mcub.modalities import MODALITIES
from mcub.models import base
from mcub.models.arguments import AdapterArguments
from mcub.models.base import Model, PreparedBatch
from mcub.results import RunFiles
from mcub.schema import MediaReceipt, ModelDescription, RunSummary

DECODED = {"image": "rgb", "video": "languagebind-224-pyav", "audio": "waveform-16k", "point": "stored"}


@dataclass
class Received:
    """One sample as the model was given it."""

    id: str
    prompt: str
    media: list[tuple[str, str]]
    tensors: list[dict[str, Any]]
    provenance: list[dict[str, Any]]


class RecordingArguments(AdapterArguments):
    builder: ClassVar[str] = "recording_model:RecordingModel"

    answer: Literal["A", "gold", "gold-if-audio"] = "A"
    """A fixed letter, the gold letter, or the gold letter only for samples given a non-silent audio input ("A" for
    the others: a model that relies on the audio)."""
    decodes: bool = True
    """Whether the harness decodes its media (False: a model that reads the files itself)."""


class RecordingModel(Model):
    """Keeps every sample it is given in `RecordingModel.received` and answers `answer` (a letter, or the gold)."""

    modalities = frozenset(MODALITIES)
    received: ClassVar[list[Received]] = []

    def __init__(self, runtime, arguments: RecordingArguments):
        self.arguments = arguments
        self.media_preprocessing = dict(DECODED) if arguments.decodes else None

    def prepare(self, samples, media):
        for sample, inputs in zip(samples, media, strict=True):
            tensors = [{key: value.clone() for key, value in item.tensors.items()} for item in inputs]
            provenance = [dict(item.provenance) for item in inputs]
            RecordingModel.received.append(Received(sample.id, sample.prompt, list(sample.media), tensors, provenance))
        receipts = [[MediaReceipt(modality=m, path=p, positions=1) for m, p in sample.media] for sample in samples]
        heard = [any(item.modality == "audio" and bool(item.tensors["waveform"].any()) for item in inputs)
                 for inputs in media]  # fmt: skip
        return PreparedBatch(samples, [sample.prompt for sample in samples], inputs=heard, receipts=receipts)

    def generate(self, batch, max_new_tokens, stop="eos"):
        answer = self.arguments.answer
        return [
            sample.answer if answer == "gold" or (answer == "gold-if-audio" and heard) else "A"
            for sample, heard in zip(batch.samples, batch.inputs, strict=True)
        ]

    def loglik(self, batch, continuations):
        return [[0.0] * len(options) for options in continuations]

    def describe(self):
        return ModelDescription(adapter="recording")


def register_recording_model(monkeypatch, tmp_path: Path) -> None:
    """Make `recording` a model id (its adapter imported from this file)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setitem(base.ADAPTERS, "recording", "recording_model:RecordingArguments")
    models_dir = tmp_path / "recording-models"
    models_dir.mkdir(exist_ok=True)
    (models_dir / "recording.yaml").write_text("name: recording\nadapter: recording\ndescription: records inputs\n")
    specs = {**base.load_model_specs(), **base.load_model_specs(models_dir)}
    monkeypatch.setattr(base, "load_model_specs", lambda *args: specs)
    RecordingModel.received = []


def run_recording(
    tmp_path: Path, name: str, tasks: list[str], conditions: list[str], **request: Any
) -> tuple[RunSummary, dict[str, Received], RunFiles]:
    """Run the recording model under `conditions`: the summary, what it received by sample id, the run's files."""
    RecordingModel.received = []
    values = {"output_dir": tmp_path / "runs", "num_workers": 0, "progress": False, **request}
    summary = mcub.evaluate(
        mcub.EvalRequest(model="recording", tasks=tasks, run_name=name, conditions=conditions, **values)
    )
    received = {item.id: item for item in RecordingModel.received}
    return summary, received, RunFiles(Path(values["output_dir"]) / "recording" / name)
