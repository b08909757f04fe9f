"""Run conditions: the exact prompt and media the model receives under each condition (a recording adapter), what
each records (seed, donor, permutation), refusals, and resumes that keep conditions apart."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import AVQA_VIDEO_AUDIO, write_avqa
from recording_model import register_recording_model, run_recording

from mcub.conditions import CONDITIONS, ConditionError, parse_condition
from mcub.conditions.inputs import remove_placeholders
from mcub.errors import RunError
from mcub.request import EvalRequest, RequestError
from mcub.results import RunFileError
from mcub.tasks import BUNDLED_DATA_ROOT

SAMPLE_DATA = BUNDLED_DATA_ROOT
AVQA = AVQA_VIDEO_AUDIO


@pytest.fixture
def recording(monkeypatch, tmp_path):
    register_recording_model(monkeypatch, tmp_path)


def sample_prompt(index: int, options: list[str]) -> str:
    from sample_builder import ITEMS, QUESTION

    lettered = "\n".join(f"{'ABCD'[k]}. {text}" for k, text in enumerate(ITEMS[index][1]))
    return f"{options[0]}{QUESTION}\n{lettered}" if options else lettered


def write_lettered_avqa(data_root: Path, count: int = 3) -> Path:
    """A hand-made AVQA task with its options on lines of their own, `count` questions."""
    prompts = [f"<video>\n<audio>\nWhat makes the sound {index}?\nA. a dog\nB. a car\nC. rain\nD. a bell"
               for index in range(count)]  # fmt: skip
    return write_avqa(data_root, prompts, ("ABCD" * count)[:count])


# --- the registry and parsing -------------------------------------------------------------------------------


def test_specs_are_parsed_into_canonical_conditions():
    assert parse_condition("drop:audio").spec == "drop:audio"
    assert parse_condition(" drop:image ").spec == "drop:image"
    assert parse_condition("circular").spec == "circular"
    assert parse_condition("noise:audio=10.0").spec == "noise:audio=10"
    assert parse_condition("noise:audio=-2.5").spec == "noise:audio=-2.5"
    assert set(CONDITIONS) == {"drop", "blank", "swap", "shuffle-order", "noise", "circular"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("zap:audio", "unknown condition 'zap:audio': the kind 'zap' is not one of "),
        ("drop:smell", "condition 'drop:smell': drop takes a modality (image, video, audio, point), not 'smell'"),
        ("drop", "condition 'drop': drop takes a modality (image, video, audio, point), not None"),
        ("circular:2", "condition 'circular:2': circular takes no argument"),
        ("shuffle-order:3", "condition 'shuffle-order:3': shuffle-order takes no argument"),
        ("noise:image=10", "condition 'noise:image=10': noise is defined for audio only (noise:audio=SNR_DB), not "),
        ("noise:audio", "condition 'noise:audio': noise:audio takes a finite signal-to-noise ratio in dB"),
        ("noise:audio=loud", "condition 'noise:audio=loud': noise:audio takes a finite signal-to-noise ratio"),
        ("noise:audio=inf", "condition 'noise:audio=inf': noise:audio takes a finite signal-to-noise ratio"),
        ("swap:all", "condition 'swap:all': swap takes a modality"),
    ],
)
def test_unknown_kinds_and_bad_arguments_are_refused_naming_the_spec(spec, message):
    with pytest.raises(ConditionError) as raised:
        parse_condition(spec)
    assert str(raised.value).startswith(message)
    assert ", ".join(sorted(CONDITIONS)) in str(raised.value)


def test_a_request_keeps_canonical_specs_and_refuses_bad_ones():
    request = EvalRequest(model="random", conditions=["drop:audio", " drop:video"])
    assert request.conditions == ["drop:audio", "drop:video"]
    with pytest.raises(RequestError, match=r"conditions: unknown condition 'nope'"):
        EvalRequest.build({"model": "random", "conditions": ["nope"]}, "the command line")
    with pytest.raises(RequestError, match="condition drop:audio is given more than once"):
        EvalRequest.build({"model": "random", "conditions": ["drop:audio", "drop:audio"]}, "x.yaml")


def test_the_condition_flag_is_repeatable_and_kept_in_order():
    from mcub.eval import build_parser, request_values

    args = build_parser().parse_args(["--model", "random", "--condition", "swap:video", "--condition", "drop:audio"])
    values, _ = request_values(args)
    assert values["conditions"] == ["swap:video", "drop:audio"]


# --- drop ---------------------------------------------------------------------------------------------------


def test_removing_placeholders_keeps_every_other_character():
    assert remove_placeholders("<video>\n<audio>\nWhat?\nA. x", "audio") == "<video>\nWhat?\nA. x"
    assert remove_placeholders("image: <image>\naudio: <audio>\nQ", "audio") == "image: <image>\naudio:\nQ"
    assert remove_placeholders("Hear <audio> and <audio>, then say.", "audio") == "Hear and , then say."
    assert remove_placeholders("<image><audio> Q\n\nA. x", "audio") == "<image>Q\n\nA. x"
    assert remove_placeholders("Q?\n  <audio> <audio>  \nA. x", "audio") == "Q?\nA. x"
    assert remove_placeholders("<audio>", "audio") == ""


def test_drop_removes_the_placeholder_and_its_input_from_what_the_model_receives(recording, tmp_path):
    summary, received, run = run_recording(tmp_path, "drop", ["mcub-sample"], ["drop:audio"])
    assert len(received) == 5
    for index in range(5):
        item = received[f"mcub-sample-{index}"]
        lines = ["image: <image>\n", "audio:\n", "video: <video>\n", "point: <point>\n"]
        assert item.prompt == sample_prompt(index, ["".join(lines)])
        assert item.media == [(m, str(SAMPLE_DATA / "sample" / f"{m}-{index}.{ext}"))
                              for m, ext in (("image", "png"), ("video", "mp4"), ("point", "npy"))]  # fmt: skip
        assert [p["modality"] for p in run.records["mcub-sample"][f"mcub-sample-{index}"].media] == [
            "image", "video", "point"]  # fmt: skip
    record = run.records["mcub-sample"]["mcub-sample-2"]
    assert record.condition == "drop:audio" and record.error is None
    assert record.meta["condition"] == {
        "spec": "drop:audio",
        "seed": 0,
        "item": "mcub-sample-2",
        "drop:audio": {"removed": [str(SAMPLE_DATA / "sample" / "audio-2.wav")]},
    }
    assert summary.settings.conditions == ["drop:audio"]
    assert summary.tasks["mcub-sample"].metrics.n == 5 and "audio" not in summary.tasks["mcub-sample"].media


def test_drop_on_a_hand_made_avqa_task(recording, tmp_path, data_root):
    write_lettered_avqa(data_root)
    _, received, run = run_recording(tmp_path, "drop-avqa", [AVQA], ["drop:video"], data_root=data_root,
                                     download=False)  # fmt: skip
    assert received["101"].prompt == "<audio>\nWhat makes the sound 1?\nA. a dog\nB. a car\nC. rain\nD. a bell"
    assert received["101"].media == [("audio", str(data_root / "avqa-media" / "a1.wav"))]
    assert received["101"].tensors[0]["waveform"].shape == (int(0.6 * 16_000),)
    assert {record.condition for record in run.records[AVQA].values()} == {"drop:video"}


def test_a_task_without_the_modality_is_refused_before_any_weight_is_read(recording, tmp_path, data_root, monkeypatch):
    from mcub.models import base

    write_lettered_avqa(data_root)
    monkeypatch.setattr(base, "build_model", lambda *args: pytest.fail("the model was built"))
    refusal = f"cannot run {AVQA}: condition drop:image does not apply to task {AVQA}: task {AVQA} has no image input"
    with pytest.raises(RunError, match=re.escape(refusal)):
        run_recording(tmp_path, "refused", [AVQA], ["drop:image"], data_root=data_root, download=False)
    with pytest.raises(RunError, match="condition swap:audio does not apply .*: no sample of task "
                                       f"{re.escape(AVQA)} has any audio input left"):  # fmt: skip
        run_recording(tmp_path, "gone", [AVQA], ["drop:audio", "swap:audio"], data_root=data_root, download=False)
    with pytest.raises(RunError, match=f"shuffle-order does not apply .*: no sample of task {re.escape(AVQA)} has two"):
        run_recording(tmp_path, "one", [AVQA], ["drop:audio", "shuffle-order"], data_root=data_root, download=False)


def test_swap_is_refused_for_a_task_of_one_sample_or_one_shared_file(recording, tmp_path, data_root):
    write_lettered_avqa(data_root, count=1)
    with pytest.raises(RunError, match=f"task {re.escape(AVQA)} has 1 sample with a video input; swap needs two"):
        run_recording(tmp_path, "one", [AVQA], ["swap:video"], data_root=data_root, download=False)
    write_lettered_avqa(data_root, count=3)
    path = data_root / "test" / "avqa-test_mm_video+audio.json"
    path.write_text(path.read_text().replace("v1.mp4", "v0.mp4"))
    with pytest.raises(RunError, match="2 of its 3 samples share the video file .*v0.mp4: no derangement"):
        run_recording(tmp_path, "shared", [AVQA], ["swap:video"], data_root=data_root, download=False)


def test_conditions_on_decoded_media_are_refused_for_a_model_that_decodes_none(recording, tmp_path):
    with pytest.raises(RunError, match="condition blank:image changes decoded media, and model recording has no "
                                       "media decoded by the harness"):  # fmt: skip
        run_recording(tmp_path, "files", ["mcub-sample"], ["blank:image", "drop:audio"],
                      model_args={"decodes": False})  # fmt: skip


# --- resuming ----------------------------------------------------------------------------------------------


def test_a_resume_under_other_conditions_is_refused_and_the_same_conditions_resume(recording, tmp_path, capsys):
    _, _, run = run_recording(tmp_path, "r", ["mcub-sample"], ["drop:audio"])
    path = run.run_dir / "records" / "mcub-sample.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    other = lines[1].replace('"condition": "drop:audio"', '"condition": "drop:video"')
    assert other != lines[1]
    path.write_text(lines[0] + other)  # a run stopped after two records, one of them made under other conditions
    with pytest.raises(RunFileError, match=r"cannot resume a run started with other settings \(conditions: "
                                           r"\['drop:audio'\] then, \['drop:video'\] now"):  # fmt: skip
        run_recording(tmp_path, "r", ["mcub-sample"], ["drop:video"], resume=True)
    with pytest.raises(RunFileError, match=r"conditions: \['drop:audio'\] then, \[\] now"):
        run_recording(tmp_path, "r", ["mcub-sample"], [], resume=True)
    capsys.readouterr()
    _, received, run = run_recording(tmp_path, "r", ["mcub-sample"], ["drop:audio"], resume=True)
    assert "1 record(s) made under other conditions than drop:audio are redone" in capsys.readouterr().err
    assert sorted(received) == [f"mcub-sample-{index}" for index in range(1, 5)]  # the missing and the other one
    assert {record.condition for record in run.records["mcub-sample"].values()} == {"drop:audio"}
    assert len(run.records["mcub-sample"]) == 5


# --- blank --------------------------------------------------------------------------------------------------


def _original(index: int, modality: str):
    from recording_model import DECODED

    from mcub.media import load_media

    ext = {"image": "png", "video": "mp4", "audio": "wav", "point": "npy"}[modality]
    return load_media(modality, str(SAMPLE_DATA / "sample" / f"{modality}-{index}.{ext}"), DECODED[modality])


def test_blank_gives_neutral_inputs_of_the_same_shape(recording, tmp_path):
    import numpy as np
    import torch

    from mcub.media.image import decode_image
    from mcub.media.video import languagebind_pixel_values

    conditions = ["blank:image", "blank:video", "blank:audio", "blank:point"]
    _, received, run = run_recording(tmp_path, "blank", ["mcub-sample"], conditions)
    for index in range(5):
        item = received[f"mcub-sample-{index}"]
        assert item.prompt == sample_prompt(index, ["image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n"])
        pixels, video, audio, points = (
            item.tensors[0]["pixels"], item.tensors[2]["pixel_values"], item.tensors[1]["waveform"],
            item.tensors[3]["points"],
        )  # fmt: skip
        image, _ = decode_image(str(SAMPLE_DATA / "sample" / f"image-{index}.png"))
        mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
        assert pixels.shape == (32, 48, 3) and (pixels == torch.tensor(np.floor(mean + 0.5), dtype=torch.uint8)).all()
        assert torch.equal(video, languagebind_pixel_values(np.zeros((8, 48, 64, 3), np.uint8)))
        original_audio = _original(index, "audio").tensors["waveform"]
        assert audio.shape == original_audio.shape == (9600,) and not audio.any() and original_audio.any()
        assert points.shape == (1024, 6) and not points.any()
        provenance = {m: p for (m, _), p in zip(item.media, item.provenance, strict=True)}
        assert provenance["audio"]["condition"] == "blank"
        assert provenance["audio"]["blank_rule"] == "silence (0), same samples and rate"
        assert provenance["video"]["frame_indices"] == _original(index, "video").provenance["frame_indices"]
    record = run.records["mcub-sample"]["mcub-sample-1"]
    assert record.condition == "blank:image+blank:video+blank:audio+blank:point"
    assert [entry["condition"] for entry in record.media] == ["blank"] * 4
    assert record.meta["condition"]["edits"] == [[{"edit": "blank"}]] * 4
    assert record.meta["condition"]["blank:image"] == {
        "rule": "every pixel the image's mean colour (per channel, rounded), same size"
    }


# --- noise --------------------------------------------------------------------------------------------------


def test_noise_adds_seeded_gaussian_noise_at_the_snr(recording, tmp_path):
    import numpy as np
    import torch

    from mcub.conditions.inputs import noisy_signal
    from mcub.hashing import derived_seed

    _, received, run = run_recording(tmp_path, "noise", ["mcub-sample"], ["noise:audio=10"], seed=3)
    for index in range(5):
        sample_id = f"mcub-sample-{index}"
        noisy = received[sample_id].tensors[1]["waveform"]
        clean = _original(index, "audio").tensors["waveform"]
        seed = derived_seed(3, "noise:audio=10", "mcub-sample", sample_id, "1")
        assert torch.equal(noisy, noisy_signal(clean, 10.0, seed)[0])
        signal, noise = clean.double(), noisy.double() - clean.double()
        snr = 10 * np.log10(float((signal**2).mean()) / float((noise**2).mean()))
        assert abs(snr - 10) < 0.3
        record = run.records["mcub-sample"][sample_id]
        assert record.meta["condition"]["noise:audio=10"] == {"snr_db": 10.0, "seeds": [seed]}
        assert record.media[1]["condition"] == "noise" and record.media[1]["noise_seed"] == seed
        assert record.media[1]["snr_db"] == 10.0 and record.media[0].get("condition") is None
    again = run_recording(tmp_path, "noise-again", ["mcub-sample"], ["noise:audio=10"], seed=3)[1]
    assert torch.equal(again["mcub-sample-0"].tensors[1]["waveform"], received["mcub-sample-0"].tensors[1]["waveform"])


def test_noise_on_silence_is_an_error_record_naming_the_file(recording, tmp_path):
    _, received, run = run_recording(tmp_path, "silent", ["mcub-sample"], ["blank:audio", "noise:audio=5"])
    assert received == {}
    record = run.records["mcub-sample"]["mcub-sample-0"]
    audio = SAMPLE_DATA / "sample" / "audio-0.wav"
    assert record.error == (
        f"media error: {audio}: blank+noise:5:{record.meta['condition']['noise:audio=5']['seeds'][0]}: the decoded "
        "audio is silent: no signal-to-noise ratio is defined"
    )
    assert record.correct is False


# --- swap ---------------------------------------------------------------------------------------------------


def test_swap_gives_each_sample_another_sample_s_input_by_a_seeded_derangement(recording, tmp_path):
    _, received, run = run_recording(tmp_path, "swap", ["mcub-sample"], ["swap:video"])
    records = run.records["mcub-sample"]
    donors = {sample_id: record.meta["condition"]["swap:video"]["donor"] for sample_id, record in records.items()}
    assert sorted(donors.values()) == sorted(donors) and all(donor != own for own, donor in donors.items())
    for sample_id, donor in donors.items():
        index, donor_index = sample_id[-1], donor[-1]
        video = str(SAMPLE_DATA / "sample" / f"video-{donor_index}.mp4")
        assert received[sample_id].media[2] == ("video", video)
        assert received[sample_id].media[0] == ("image", str(SAMPLE_DATA / "sample" / f"image-{index}.png"))
        assert received[sample_id].prompt == sample_prompt(int(index), ["image: <image>\naudio: <audio>\nvideo: "
                                                                        "<video>\npoint: <point>\n"])  # fmt: skip
        assert records[sample_id].meta["condition"]["swap:video"]["file"] == video
        assert received[sample_id].provenance[2]["total_frames"] == 12 + int(donor_index)
    seeds = {record.meta["condition"]["swap:video"]["seed"] for record in records.values()}
    assert len(seeds) == 1
    same = run_recording(tmp_path, "swap-again", ["mcub-sample"], ["swap:video"])[2].records["mcub-sample"]
    assert {i: r.meta["condition"]["swap:video"]["donor"] for i, r in same.items()} == donors
    other_seeds = [
        {i: r.meta["condition"]["swap:video"]["donor"] for i, r in
         run_recording(tmp_path, f"swap-{seed}", ["mcub-sample"], ["swap:video"], seed=seed)[2].records[
             "mcub-sample"].items()}
        for seed in (1, 2)
    ]  # fmt: skip
    assert any(donors_of_seed != donors for donors_of_seed in other_seeds)


def test_conditions_compose_in_the_order_given(recording, tmp_path, data_root):
    write_lettered_avqa(data_root, count=3)
    _, received, run = run_recording(tmp_path, "both", [AVQA], ["drop:audio", "swap:video"], data_root=data_root,
                                     download=False)  # fmt: skip
    for sample_id, record in run.records[AVQA].items():
        donor = record.meta["condition"]["swap:video"]["donor"]
        assert record.condition == "drop:audio+swap:video" and donor != sample_id
        assert received[sample_id].media == [("video", str(data_root / "avqa-media" / f"v{int(donor) - 100}.mp4"))]
        assert received[sample_id].prompt.startswith("<video>\nWhat makes the sound")


# --- shuffle-order --------------------------------------------------------------------------------------------


def test_shuffle_order_permutes_inputs_with_their_placeholders(recording, tmp_path):
    from mcub.hashing import derived_seed
    from mcub.modalities import PLACEHOLDERS

    _, received, run = run_recording(tmp_path, "shuffle", ["mcub-sample"], ["shuffle-order"])
    original = [("image", "png"), ("audio", "wav"), ("video", "mp4"), ("point", "npy")]
    for index in range(5):
        sample_id = f"mcub-sample-{index}"
        details = run.records["mcub-sample"][sample_id].meta["condition"]["shuffle-order"]
        order = details["permutation"]
        assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]
        assert details["seed"] == derived_seed(0, "shuffle-order", "mcub-sample", sample_id)
        moved = [original[k] for k in order]
        assert received[sample_id].media == [
            (m, str(SAMPLE_DATA / "sample" / f"{m}-{index}.{ext}")) for m, ext in moved
        ]
        labels = ["image: ", "audio: ", "video: ", "point: "]
        lines = "".join(f"{label}{PLACEHOLDERS[m]}\n" for label, (m, _) in zip(labels, moved, strict=True))
        assert received[sample_id].prompt == sample_prompt(index, [lines])
    orders = {tuple(r.meta["condition"]["shuffle-order"]["permutation"]) for r in run.records["mcub-sample"].values()}
    assert len(orders) > 1  # seeded per sample


# --- rescoring ----------------------------------------------------------------------------------------------


def test_rescoring_and_validation_apply_the_run_s_conditions_again(recording, tmp_path):
    import mcub
    from mcub.leaderboard import validate_run
    from mcub.schema import DataPaths

    summary, _, run = run_recording(tmp_path, "swap", ["mcub-sample"], ["swap:audio", "drop:point"])
    rescored, out_dir = mcub.score_run(run.run_dir, DataPaths())
    assert rescored.settings.conditions == ["swap:audio", "drop:point"]
    assert rescored.tasks["mcub-sample"].metrics == summary.tasks["mcub-sample"].metrics
    # the records follow from the conditioned samples; the leaderboard still takes only unmodified runs
    assert validate_run(run.run_dir, DataPaths()) == [
        "the run was made under the condition(s) swap:audio+drop:point; the leaderboard takes runs of the tasks as "
        "they are"
    ]
    from mcub.results import summary_table

    assert summary_table(rescored).endswith("\n\nEvery record was made under the condition(s) swap:audio+drop:point.")


# --- the decoded-media hook --------------------------------------------------------------------------------


def test_edited_inputs_are_decoded_from_their_file_never_cached_and_shared_only_when_edited_alike(tmp_path):
    import torch

    from mcub.conditions import apply_conditions
    from mcub.data import load_task
    from mcub.media import load_media
    from mcub.models.feature_cache import FeatureCache
    from mcub.runner.loading import SampleDataset
    from mcub.tasks import load_registry

    task = load_registry().tasks["mcub-sample"]
    samples = load_task(task).samples
    image = samples[0].media[0][1]
    cache = FeatureCache(tmp_path / "cache", {"image": "weights", "audio": "weights"})
    cache.store(load_media("image", image, "rgb"), torch.ones(2, 3))
    assert cache.load("image", image, load_media("image", image, "rgb").provenance["sha256"], "rgb") is not None
    blanked = apply_conditions([parse_condition("blank:image"), parse_condition("noise:audio=0")], task, samples, 0)
    dataset = SampleDataset(blanked, {"image": "rgb", "audio": "waveform-16k"}, cache)
    decoded = {}
    first = dataset.load(0, decoded)
    assert first.error is None and "features" not in first.media[0].tensors
    assert first.media[0].provenance["condition"] == "blank"
    assert first.media[0].provenance["preprocessing"] == "rgb+blank"
    seed = blanked[0].meta["condition"]["noise:audio=0"]["seeds"][0]
    assert first.media[1].provenance["preprocessing"] == f"waveform-16k+noise:0:{seed}"
    cache.store(first.media[0], torch.zeros(2, 3))
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1  # the edited input's features are not kept
    twin = dataclasses.replace(blanked[0], id="twin", meta={**blanked[0].meta})
    twin.meta["condition"] = {**twin.meta["condition"], "edits": [[{"edit": "blank"}], [], [], []]}
    second = SampleDataset([twin], {"image": "rgb", "audio": "waveform-16k"}, cache).load(0, decoded)
    assert second.media[0] is first.media[0]  # the same file edited alike: decoded once for the batch
    assert "condition" not in second.media[1].provenance and second.media[1] is not first.media[1]


def test_a_composed_model_encodes_differently_noised_inputs_of_one_file_apart(tmp_path):
    import torch

    from mcub.conditions import apply_conditions
    from mcub.models.base import Runtime
    from mcub.models.modelcompose.arguments import ModelComposeArguments
    from mcub.models.modelcompose.model import ModelComposeModel
    from mcub.models.modelcompose.tiny import tiny_damc_layout
    from mcub.runner.loading import SampleDataset
    from mcub.schema import Sample
    from mcub.tasks import load_registry

    tiny = tiny_damc_layout(tmp_path / "tiny-damc")
    arguments = ModelComposeArguments(base=tiny["base"], experts=tiny["experts"], encoders=tiny["encoders"],
                                      point_encoder=tiny["point_encoder"])  # fmt: skip
    model = ModelComposeModel(Runtime(), arguments)
    audio = str(SAMPLE_DATA / "sample" / "audio-0.wav")
    task = load_registry().tasks["avqa-audio"]
    samples = [
        Sample(
            task.name,
            str(index),
            f"<audio>\nWhat sounds {index}?",
            (("audio", audio),),
            {"A": "x", "B": "y"},
            "A",
            {"question_index": index},
        )  # fmt: skip
        for index in range(2)
    ]

    def audio_spans(conditions: list[str]) -> list[torch.Tensor]:
        conditioned = apply_conditions([parse_condition(c) for c in conditions], task, samples, 0)
        dataset, decoded = SampleDataset(conditioned, model.media_preprocessing), {}
        loaded = [dataset.load(index, decoded) for index in range(2)]
        batch = model.prepare(conditioned, [item.media for item in loaded])
        return [next(span.embeddings for span in spans if span.embeddings is not None) for spans in batch.inputs]

    plain, noised, blanked = audio_spans([]), audio_spans(["noise:audio=0"]), audio_spans(["blank:audio"])
    assert torch.equal(plain[0], plain[1]) and torch.equal(blanked[0], blanked[1])
    assert not torch.equal(noised[0], noised[1])  # one file, two noise seeds: two encodings
    assert not torch.equal(noised[0], plain[0]) and not torch.equal(blanked[0], plain[0])


def test_decoding_workers_apply_the_edits_as_the_main_process_does(recording, tmp_path):
    import torch

    conditions = ["blank:image", "noise:audio=3", "shuffle-order"]
    _, inline, _ = run_recording(tmp_path, "inline", ["mcub-sample"], conditions)
    _, workers, run = run_recording(tmp_path, "workers", ["mcub-sample"], conditions, num_workers=2, batch_size=2)
    assert sorted(workers) == sorted(inline)
    for sample_id, item in workers.items():
        assert item.prompt == inline[sample_id].prompt and item.media == inline[sample_id].media
        for ours, theirs in zip(item.tensors, inline[sample_id].tensors, strict=True):
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(record.error is None for record in run.records["mcub-sample"].values())
