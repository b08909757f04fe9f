"""Media-consumption receipts: a model that drops a modality produces error records naming it (never answers), the
ModelCompose receipts equal its routed spans, and the summary counts what was consumed per modality."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

import mcub
from mcub.media import load_media
from mcub.modalities import MODALITIES
from mcub.models import base
from mcub.models.arguments import AdapterArguments
from mcub.models.base import Model, PreparedBatch, Runtime
from mcub.models.modelcompose.arguments import ModelComposeArguments
from mcub.models.modelcompose.model import ModelComposeModel
from mcub.models.modelcompose.tiny import tiny_damc_layout
from mcub.results import RunFiles
from mcub.runner.receipts import receipt_problem
from mcub.schema import MediaReceipt, ModelDescription, Sample
from mcub.tasks import BUNDLED_DATA_ROOT

SAMPLE_MEDIA = BUNDLED_DATA_ROOT / "sample"


class DroppingArguments(AdapterArguments):
    builder: ClassVar[str] = "test_receipts:DroppingModel"

    drop: str | None = None
    """The modality whose inputs the model leaves out (no receipt); None: it consumes everything."""
    zero: str | None = None
    """The modality whose inputs take no position."""


class DroppingModel(Model):
    """Answers "A" to everything and gives receipts for the media it claims to consume."""

    modalities = frozenset(MODALITIES)
    media_preprocessing = None

    def __init__(self, runtime, arguments: DroppingArguments):
        self.arguments = arguments

    def prepare(self, samples, media):
        receipts = [
            [
                MediaReceipt(modality=m, path=p, positions=0 if m == self.arguments.zero else 3)
                for m, p in sample.media
                if m != self.arguments.drop
            ]
            for sample in samples
        ]
        return PreparedBatch(samples, [sample.prompt for sample in samples], receipts=receipts)

    def generate(self, batch, max_new_tokens, stop="eos"):
        return ["A"] * len(batch.samples)

    def loglik(self, batch, continuations):
        return [[0.0] * len(options) for options in continuations]

    def describe(self):
        return ModelDescription(adapter="dropping")


@pytest.fixture
def dropping(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setitem(base.ADAPTERS, "dropping", "test_receipts:DroppingArguments")
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "dropping.yaml").write_text("name: dropping\nadapter: dropping\ndescription: drops media\n")
    specs = {**base.load_model_specs(), **base.load_model_specs(models_dir)}
    monkeypatch.setattr(base, "load_model_specs", lambda *args: specs)

    def run(name: str, **model_args):
        request = mcub.EvalRequest(model="dropping", tasks=["mcub-sample"], output_dir=tmp_path / "runs",
                                   run_name=name, num_workers=0, progress=False, model_args=model_args)  # fmt: skip
        summary = mcub.evaluate(request)
        return summary, RunFiles(tmp_path / "runs" / "dropping" / name).records["mcub-sample"]

    return run


def test_a_model_that_drops_a_modality_gives_error_records_naming_it(dropping):
    summary, records = dropping("full")
    assert all(record.error is None and record.output == "A" for record in records.values())
    assert summary.tasks["mcub-sample"].media["audio"].model_dump() == {"inputs": 5, "consumed": 5, "positions": 15}

    summary, records = dropping("no-audio", drop="audio")
    for record in records.values():
        audio = next(entry["path"] for entry in record.media if entry["modality"] == "audio")
        assert record.error == f"media not consumed: audio input 2 ({audio}) has no receipt"
        assert record.correct is False and record.output == "A"  # kept for inspection, never counted as answered
    metrics = summary.tasks["mcub-sample"].metrics
    assert (metrics.errors, metrics.correct, metrics.n) == (5, 0, 5)
    assert summary.tasks["mcub-sample"].media["audio"].consumed == 0


def test_a_modality_in_zero_positions_is_not_consumed(dropping):
    summary, records = dropping("zero-video", zero="video")
    assert all("video input 3" in record.error and "took no position" in record.error for record in records.values())
    assert summary.tasks["mcub-sample"].media["video"].model_dump() == {"inputs": 5, "consumed": 0, "positions": 0}
    assert summary.tasks["mcub-sample"].media["image"].consumed == 5


def test_receipts_must_follow_the_sample_s_media():
    sample = Sample("t", "1", "<image> <audio>", (("image", "a.png"), ("audio", "b.wav")), {"A": "x"}, "A")
    image, audio = (MediaReceipt(modality=m, path=p, positions=1) for m, p in sample.media)
    assert receipt_problem(sample, [image, audio]) is None
    assert receipt_problem(sample, None) == "the model gave no receipt of what it consumed of the media"
    assert receipt_problem(sample, [audio, image]) == (
        "media not consumed: image input 1 (a.png) has no receipt; "
        "receipt(s) out of placeholder order or for media the sample does not carry: image a.png"
    )
    assert receipt_problem(sample, [image, audio, audio]).endswith("the sample does not carry: audio b.wav")
    text_only = Sample("t", "2", "no media", (), {"A": "x"}, "A")
    assert receipt_problem(text_only, None) is None and receipt_problem(text_only, []) is None


def test_null_baselines_read_no_media_and_the_summary_says_none_was_consumed(tmp_path):
    request = mcub.EvalRequest(model="random", tasks=["mcub-sample"], output_dir=tmp_path, run_name="r",
                               num_workers=0, progress=False)  # fmt: skip
    summary = mcub.evaluate(request)
    assert {m: c.consumed for m, c in summary.tasks["mcub-sample"].media.items()} == dict.fromkeys(MODALITIES, 0)
    assert all(
        record.receipts is None for record in RunFiles(tmp_path / "random" / "r").records["mcub-sample"].values()
    )


def test_modelcompose_receipts_equal_its_routed_spans(tmp_path):
    tiny = tiny_damc_layout(tmp_path / "tiny-damc")
    model = ModelComposeModel(
        Runtime(),
        ModelComposeArguments(
            base=tiny["base"],
            experts=tiny["experts"],
            encoders=tiny["encoders"],
            point_encoder=tiny["point_encoder"],
        ),
    )
    files = {"image": "image-0.png", "video": "video-0.mp4", "audio": "audio-0.wav", "point": "point-0.npy"}
    order = ("audio", "image", "point", "video")
    sample = Sample(
        "t",
        "1",
        " then ".join(f"<{m}>" for m in order) + "\nWhat is common?",
        tuple((m, str(SAMPLE_MEDIA / files[m])) for m in order),
        {},
        "x",
        {"question_index": 0},
    )
    media = [load_media(m, path, model.media_preprocessing[m]) for m, path in sample.media]
    batch = model.prepare([sample], [media])
    routed = [span for span in batch.inputs[0] if span.embeddings is not None]
    [receipts] = batch.receipts
    assert [(r.modality, r.path) for r in receipts] == list(sample.media)
    assert [r.positions for r in receipts] == [len(span) for span in routed]
    assert [span.route for span in routed] == [model.composition.modalities[m].route for m in order]
    assert receipts[2].details == {"points": media[2].provenance["count"]}
    assert receipts[3].details == {"frames": 8}
    assert receipt_problem(sample, receipts) is None


def test_lm_eval_stops_at_a_sample_whose_media_the_model_did_not_consume(dropping):
    from types import SimpleNamespace

    from mcub.data import load_task
    from mcub.errors import McubError
    from mcub.lmeval import McubLM, doc_to_text, sample_doc
    from mcub.schema import DataPaths
    from mcub.tasks import load_registry

    [task] = load_registry().resolve(["mcub-sample"])
    data = load_task(task, DataPaths())
    context = doc_to_text(sample_doc(data.samples[0], task))
    request = SimpleNamespace(args=(context, {"until": [], "max_gen_toks": 4}))
    assert McubLM(model="dropping").generate_until([request]) == ["A"]
    with pytest.raises(McubError, match=r"sample mcub-sample-0 of mcub-sample: media not consumed: audio input 2"):
        McubLM(model="dropping", drop="audio").generate_until([request])
