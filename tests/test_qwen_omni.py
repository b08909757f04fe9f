"""The Qwen2.5-Omni adapter on a tiny random thinker and processor written here: its arguments and media
preprocessings, content parts in placeholder order, use_audio_in_video reaching the processor and the model, real
batching, greedy decoding, loglik against independent teacher forcing, receipts counted from the processor's tokens,
the same numbers on transformers 5.17 and 5.24, errors through the runner, and the point-cloud tasks it is skipped
for."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import answer, question, write_json

import mcub
from mcub.errors import MediaError, RunError, UnsupportedInput
from mcub.evaluation import plan_run
from mcub.hashing import file_sha256
from mcub.media import consumed, load_media, synthetic
from mcub.media.audio import decode_audio
from mcub.models.base import Runtime, load_model_specs
from mcub.models.qwen_omni.arguments import QwenOmniArguments
from mcub.models.qwen_omni.conversation import DEFAULT_SYSTEM_PROMPT
from mcub.results import RunFiles
from mcub.runner.receipts import receipt_problem
from mcub.schema import Sample
from mcub.tasks import load_registry

SPECIALS = {
    "pad": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "audio": "<|AUDIO|>",
    "audio_bos": "<|audio_bos|>",
    "audio_eos": "<|audio_eos|>",
    "vision_bos": "<|vision_bos|>",
    "vision_eos": "<|vision_eos|>",
    "image": "<|IMAGE|>",
    "video": "<|VIDEO|>",
}
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPT = "<audio> then <image> and <video>\nWhich is shared?\nA. a dog\nB. rain\nC. music\nD. a car"
OPTIONS = {"A": "a dog", "B": "rain", "C": "music", "D": "a car"}
SMALL = {"image_min_pixels": 28 * 28, "image_max_pixels": 28 * 28 * 16, "video_min_pixels": 28 * 28,
         "video_max_pixels": 28 * 28 * 4}  # fmt: skip


# arguments and media preprocessings (no torchvision needed)


def test_the_arguments_default_to_qwen_omni_utils_and_take_three_modalities():
    arguments = QwenOmniArguments(pretrained="Qwen/Qwen2.5-Omni-7B")
    assert (arguments.image_min_pixels, arguments.image_max_pixels) == (4 * 28 * 28, 16384 * 28 * 28)
    assert (arguments.video_min_pixels, arguments.video_max_pixels) == (128 * 28 * 28, 768 * 28 * 28)
    assert arguments.use_audio_in_video is False and arguments.system_prompt is None
    assert arguments.input_modalities() == ("image", "video", "audio")
    assert arguments.components() == ["pretrained=Qwen/Qwen2.5-Omni-7B"]
    with pytest.raises(ValueError, match=r"image_min_pixels \(10\) is above image_max_pixels \(5\)"):
        QwenOmniArguments(pretrained="x", image_min_pixels=10, image_max_pixels=5)
    specs = load_model_specs()
    for size in ("7B", "3B"):
        spec = specs[f"qwen2.5-omni-{size.lower()}"]
        assert spec.adapter == "qwen-omni" and spec.components() == [f"pretrained=Qwen/Qwen2.5-Omni-{size}"]
        assert spec.modalities == ("image", "video", "audio")


def test_qwen_omni_2fps_samples_frames_by_the_qwen_omni_utils_rule(tmp_path):
    short = load_media("video", str(synthetic.write_video(tmp_path / "short.mp4", frames=12, fps=24)), "qwen-omni-2fps")
    assert short.tensors["frames"].shape == (4, 48, 64, 3) and short.tensors["frames"].dtype == torch.uint8
    assert short.provenance["frame_indices"] == [0, 4, 7, 11]  # 0.5 s: 1 frame at 2 fps, raised to 4
    assert short.provenance["sample_fps"] == 8.0 and consumed(short) == {"frames": 4}
    red = short.tensors["frames"][:, 24, 32, 0].double() / 8  # index * 8, after H.264's loss
    assert (red.round() - torch.tensor([0, 4, 7, 11])).abs().max() <= 1  # the frames decoded are the frames named
    long = load_media("video", str(synthetic.write_video(tmp_path / "long.mp4", frames=30, fps=10)), "qwen-omni-2fps")
    assert long.provenance["frame_indices"] == [0, 6, 12, 17, 23, 29] and long.provenance["sample_fps"] == 2.0
    assert long.provenance["sampling"] == {"fps": 2.0, "min_frames": 4, "max_frames": 768, "frame_factor": 2}
    with pytest.raises(MediaError, match="too short for Qwen2.5-Omni's frame sampling"):
        load_media("video", str(synthetic.write_video(tmp_path / "one.mp4", frames=1)), "qwen-omni-2fps")
    with pytest.raises(MediaError, match="no audio stream: qwen-omni-2fps-audio reads the video's own audio"):
        load_media("video", str(tmp_path / "short.mp4"), "qwen-omni-2fps-audio")


def test_rgb_and_waveform_16k_hand_over_the_decoded_media(tmp_path):
    from PIL import Image

    image = load_media("image", str(synthetic.write_image(tmp_path / "i.png", 48, 32)), "rgb")
    assert np.array_equal(image.tensors["pixels"].numpy(), np.asarray(Image.open(tmp_path / "i.png").convert("RGB")))
    assert consumed(image) == {"width": 48, "height": 32}
    path = str(synthetic.write_audio(tmp_path / "a.wav", seconds=0.5, rate=44100, channels=2))
    audio = load_media("audio", path, "waveform-16k")
    assert torch.equal(audio.tensors["waveform"], decode_audio(path)[0]) and consumed(audio) == {"seconds": 0.5}


def test_a_point_cloud_task_is_skipped_with_the_reason(tmp_path):
    request = mcub.EvalRequest(model="qwen2.5-omni-7b", data_root=tmp_path, download=False, output_dir=tmp_path)
    plan = plan_run(request, load_registry(), log=lambda message: None)
    point_tasks = [name for name, task in load_registry().tasks.items() if "point" in task.modalities]
    assert point_tasks and all(plan.skipped[name] == "model qwen2.5-omni-7b lacks point" for name in point_tasks)
    with pytest.raises(RunError, match="cannot run mcub-4: model qwen2.5-omni-7b lacks point"):
        plan_run(request.model_copy(update={"tasks": ["mcub-4"]}), load_registry())


# the model, on a tiny random checkpoint


def write_tiny_qwen_omni(directory: Path) -> Path:
    """A random Qwen2.5-Omni thinker of a few thousand weights, its processor and a byte-level BPE tokenizer, with
    a generation config that asks for sampling (which the adapter must override)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIALS.values()), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator([DEFAULT_SYSTEM_PROMPT, PROMPT, "system user assistant\n\n rain\n\n"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=SPECIALS["im_end"],
        pad_token=SPECIALS["pad"],
        **{f"{name}_token": SPECIALS[name] for name in ("image", "video", "audio")},
        **{f"{name}_token": SPECIALS[name] for name in ("vision_bos", "vision_eos", "audio_bos", "audio_eos")},
    )
    Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=WhisperFeatureExtractor(feature_size=16, chunk_length=2),
        tokenizer=tokenizer,
        chat_template=TEMPLATE,
    ).save_pretrained(directory)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in SPECIALS.items()}
    config = Qwen2_5OmniThinkerConfig(
        audio_config={"num_mel_bins": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                      "d_model": 16, "output_dim": 32, "n_window": 10, "max_source_positions": 100},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
                       "window_size": 28, "fullatt_block_indexes": [0]},
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                     "rope_scaling": {"type": "default", "mrope_section": [2, 1, 1]}},
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
        vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"],
    )  # fmt: skip
    torch.manual_seed(0)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration(config)
    thinker.generation_config = GenerationConfig(
        eos_token_id=ids["im_end"], do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05
    )
    thinker.save_pretrained(directory)
    return directory


def write_video_with_audio(path: Path, frames: int = 12, fps: int = 24, seconds: float = 0.5) -> Path:
    """An mp4 of synthetic frames (as `synthetic.write_video`) with a 16 kHz AAC tone track."""
    import av

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono")
        for index in range(frames):
            container.mux(
                video.encode(av.VideoFrame.from_ndarray(synthetic.video_frame(index, 64, 48), format="rgb24"))
            )
        container.mux(video.encode(None))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)
        for start in range(0, tone.shape[0], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[None, start : start + 1024]), format="flt",
                                               layout="mono")  # fmt: skip
            chunk.rate = 16000
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("torchvision", reason="transformers' Qwen2.5-Omni processor needs torchvision")
    return write_tiny_qwen_omni(tmp_path_factory.mktemp("tiny-qwen-omni"))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "image": str(synthetic.write_image(folder / "i.png", 48, 32)),
        "image-2": str(synthetic.write_image(folder / "j.png", 40, 60, seed=1)),
        "audio": str(synthetic.write_audio(folder / "a.wav", seconds=0.5)),
        "audio-2": str(synthetic.write_audio(folder / "b.wav", seconds=0.8, frequency=660.0)),
        "video": str(synthetic.write_video(folder / "v.mp4", frames=12, fps=24)),
        "long-video": str(synthetic.write_video(folder / "w.mp4", frames=48, fps=12)),
        "video+audio": str(write_video_with_audio(folder / "va.mp4")),
        "blip": str(synthetic.write_audio(folder / "blip.wav", seconds=0.01)),
    }


def _model(tiny: Path, **overrides):
    from mcub.models.qwen_omni.model import QwenOmniModel

    return QwenOmniModel(Runtime(), QwenOmniArguments(pretrained=str(tiny), **{**SMALL, **overrides}))


def _sample(sample_id: str, prompt: str, files: list[tuple[str, str]]) -> Sample:
    return Sample("t", sample_id, prompt, tuple(files), OPTIONS, "A", {"question_index": int(sample_id)})


def _posed(model, samples: list[Sample]):
    decoded = [[load_media(m, path, model.media_preprocessing[m]) for m, path in sample.media] for sample in samples]
    return model.prepare(samples, decoded)


def _samples(media) -> list[Sample]:
    first = [("audio", media["audio"]), ("image", media["image"]), ("video", media["video"])]
    second = [("audio", media["audio-2"]), ("image", media["image-2"]), ("video", media["long-video"])]
    return [_sample("1", PROMPT, first), _sample("2", PROMPT.replace("shared", "common"), second)]


def _decoded(model, sample: Sample):
    return [sample], [[load_media(m, path, model.media_preprocessing[m]) for m, path in sample.media]]


def test_content_parts_follow_the_placeholders(tiny, media):
    model = _model(tiny)
    batch = _posed(model, _samples(media)[:1])
    assert batch.prompts == [
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
        "<|audio_bos|><|AUDIO|><|audio_eos|> then <|vision_bos|><|IMAGE|><|vision_eos|> and "
        "<|vision_bos|><|VIDEO|><|vision_eos|>\nWhich is shared?\nA. a dog\nB. rain\nC. music\nD. a car<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]
    pads = [model.tokens.audio, model.tokens.image, model.tokens.video]
    runs = [token for token, _ in itertools.groupby(batch.inputs["input_ids"][0].tolist()) if token in pads]
    assert runs == pads  # one run of pad tokens per input, in placeholder order
    own = _model(tiny, system_prompt="Answer with a letter.")
    [prompt] = own.prepare(*_decoded(own, _sample("3", "<image> or not?", [("image", media["image"])]))).prompts
    assert prompt.startswith("<|im_start|>system\nAnswer with a letter.<|im_end|>\n<|im_start|>user\n<|vision_bos|>")
    with pytest.raises(UnsupportedInput, match="sample 4: placeholders image but media audio"):
        model.prepare([_sample("4", "<image>?", [("audio", media["audio"])])], [[]])


@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_use_audio_in_video_reaches_the_processor_and_the_model(tiny, media, monkeypatch, use_audio_in_video):
    import inspect

    from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

    seen = {"processor": [], "model": [], "positions": []}
    process, forward = Qwen2_5OmniProcessor.__call__, Qwen2_5OmniThinkerForConditionalGeneration.forward
    rope_index = Qwen2_5OmniThinkerForConditionalGeneration.get_rope_index

    @functools.wraps(process)
    def spied_process(self, *args, **kwargs):  # 5.24 names it load_audio_from_video, 5.17 use_audio_in_video
        seen["processor"].append(
            [kwargs[key] for key in ("load_audio_from_video", "use_audio_in_video") if key in kwargs]
        )
        return process(self, *args, **kwargs)

    @functools.wraps(forward)  # generate checks its arguments against forward's signature
    def spied_forward(self, *args, **kwargs):
        seen["model"].append(kwargs["use_audio_in_video"])
        return forward(self, *args, **kwargs)

    @functools.wraps(rope_index)
    def spied_rope_index(self, *args, **kwargs):  # where the flag takes effect: the positions of a video's audio
        bound = inspect.signature(rope_index).bind(self, *args, **kwargs)
        bound.apply_defaults()
        seen["positions"].append(bound.arguments["use_audio_in_video"])
        return rope_index(self, *args, **kwargs)

    monkeypatch.setattr(Qwen2_5OmniProcessor, "__call__", spied_process)
    monkeypatch.setattr(Qwen2_5OmniThinkerForConditionalGeneration, "forward", spied_forward)
    monkeypatch.setattr(Qwen2_5OmniThinkerForConditionalGeneration, "get_rope_index", spied_rope_index)
    model = _model(tiny, use_audio_in_video=use_audio_in_video)
    sample = _sample(
        "1", PROMPT, [("audio", media["audio"]), ("image", media["image"]), ("video", media["video+audio"])]
    )
    batch = model.prepare(*_decoded(model, sample))
    assert isinstance(model.generate(batch, max_new_tokens=3)[0], str)
    [scores] = model.loglik(batch, [["A", "a dog"]])
    assert len(scores) == 2 and all(np.isfinite(scores))
    assert seen["processor"] == [[use_audio_in_video]] and set(seen["model"]) == {use_audio_in_video}
    assert len(seen["model"]) == 3 + 2  # the generation steps and the two loglik passes
    assert seen["positions"] == [use_audio_in_video] * 2  # generation's and loglik's
    audio, image, video = batch.receipts[0]
    ids = batch.inputs["input_ids"][0].tolist()
    audio_pads = ids.count(model.tokens.audio)
    assert video.positions == ids.count(model.tokens.video) + (audio_pads - audio.positions)
    if use_audio_in_video:
        assert video.details["audio_seconds"] == pytest.approx(0.5, abs=0.1) and audio_pads > audio.positions
    else:
        assert "audio_seconds" not in video.details and audio_pads == audio.positions
    assert model.media_preprocessing["video"] == ("qwen-omni-2fps-audio" if use_audio_in_video else "qwen-omni-2fps")
    assert model.describe().details["use_audio_in_video"] is use_audio_in_video


@pytest.mark.parametrize(
    ("use_audio_in_video", "positions", "answers", "logliks"),
    [
        (False, [[12, 2, 8], [20, 2, 16]], ["st\ufffdable vi"] * 2,
         [[-5.9544, -11.7724, -12.2022], [-5.9581, -11.7748, -12.2135]]),
        (True, [[12, 2, 22]], ["st\u0431:"], [[-5.9568, -11.7662, -12.2042]]),
    ],
)  # fmt: skip
def test_the_numbers_are_the_same_on_transformers_5_17_and_5_24(
    tiny, media, use_audio_in_video, positions, answers, logliks
):
    """Measured on both versions, whose calls differ (mcub.models.qwen_omni.compat): the same token spans, greedy
    answers and logliks, with and without a video's own audio."""
    model = _model(tiny, use_audio_in_video=use_audio_in_video)
    samples = _samples(media)
    if use_audio_in_video:
        samples = [_sample("1", PROMPT, [("audio", media["audio"]), ("image", media["image"]),
                                         ("video", media["video+audio"])])]  # fmt: skip
    batch = _posed(model, samples)
    assert [[receipt.positions for receipt in receipts] for receipts in batch.receipts] == positions
    assert model.generate(batch, max_new_tokens=4) == answers
    assert np.allclose(model.loglik(batch, [["A", "a dog", "\n rain"]] * len(samples)), logliks, atol=2e-4)


def test_a_batch_of_two_equals_two_batches_of_one(tiny, media):
    model = _model(tiny)
    samples = _samples(media)
    batch = _posed(model, samples)
    alone = [_posed(model, [sample]) for sample in samples]
    assert model.generate(batch, max_new_tokens=6) == [model.generate(one, max_new_tokens=6)[0] for one in alone]
    continuations = [["A", "B", "a dog", "music"]] * 2
    together = model.loglik(batch, continuations)
    for row, one in enumerate(alone):
        assert np.allclose(together[row], model.loglik(one, continuations[:1])[0], atol=1e-4)
    with torch.no_grad():
        last = model.model(**model._model_inputs(batch.inputs)).logits[:, -1]
        for row, one in enumerate(alone):
            assert torch.allclose(last[row], model.model(**model._model_inputs(one.inputs)).logits[0, -1], atol=1e-5)
    assert [len(receipts) for receipts in batch.receipts] == [3, 3]
    assert [r.positions for r in batch.receipts[1]] == [r.positions for r in alone[1].receipts[0]]


def test_generation_is_greedy_whatever_the_checkpoint_samples(tiny, media):
    model = _model(tiny)
    batch = _posed(model, _samples(media)[:1])
    assert model.model.generation_config.do_sample is True  # the checkpoint asks for sampling
    tokenizer = model.processor.tokenizer
    inputs = model._model_inputs(batch.inputs)
    chain: list[int] = []
    with torch.no_grad():
        for _ in range(5):
            ids = torch.cat([inputs["input_ids"], torch.tensor([chain], dtype=torch.long)], dim=1)
            step = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            chain.append(int(model.model(**step).logits[0, -1].argmax()))
            if chain[-1] in model.eos_token_ids:
                break
    assert model.generate(batch, max_new_tokens=5) == [tokenizer.decode(chain, skip_special_tokens=True)]
    assert model.describe().details["decoding"]["do_sample"] is False


def test_loglik_is_the_teacher_forced_sum_of_continuation_token_logprobs(tiny, media):
    model = _model(tiny)
    batch = _posed(model, _samples(media))
    options = [["A", "a dog", "\n rain"], ["B", "music"]]
    scores = model.loglik(batch, options)
    tokenizer = model.processor.tokenizer
    for row, texts in enumerate(options):
        one = model._model_inputs(_posed(model, _samples(media)[row : row + 1]).inputs)
        for text, score in zip(texts, scores[row], strict=True):
            context = tokenizer(batch.prompts[row]).input_ids
            full = tokenizer(batch.prompts[row] + text).input_ids
            shared = next((i for i, (a, b) in enumerate(zip(context, full, strict=False)) if a != b), len(context))
            scored = full[shared:]
            prefix = one["input_ids"][0, : one["input_ids"].shape[1] - (len(context) - shared)].tolist()
            ids = torch.tensor([prefix + scored])
            with torch.no_grad():
                step = {**one, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
                logprobs = torch.log_softmax(model.model(**step).logits[0].float(), dim=-1)
            start = len(prefix)
            expected = sum(float(logprobs[start + i - 1, token]) for i, token in enumerate(scored))
            assert score == pytest.approx(expected, abs=1e-4), text


def test_receipts_count_the_processor_s_tokens(tiny, media):
    model = _model(tiny)
    samples = _samples(media)
    batch = _posed(model, samples)
    inputs = batch.inputs
    merge = model.processor.image_processor.merge_size**2
    for row, receipts in enumerate(batch.receipts):
        ids = inputs["input_ids"][row].tolist()
        audio, image, video = receipts
        assert [(r.modality, r.path) for r in receipts] == list(samples[row].media)
        assert image.positions == ids.count(model.tokens.image) == int(inputs["image_grid_thw"][row].prod()) // merge
        assert video.positions == ids.count(model.tokens.video) == int(inputs["video_grid_thw"][row].prod()) // merge
        frames = int(inputs["feature_attention_mask"][row].sum())
        assert audio.positions == ids.count(model.tokens.audio) == ((frames - 1) // 2 + 1 - 2) // 2 + 1
        assert audio.details["seconds"] == frames * 160 / 16000 == audio.details["decoded_seconds"]
        assert image.details["resized"] == [14 * side for side in image.details["grid"][1:]]
        assert receipt_problem(samples[row], receipts) is None
    assert batch.receipts[0][2].details["frames"] == 4 and batch.receipts[1][2].details["frames"] == 8
    assert batch.receipts[0][1].details["width"] == 48
    blip = _sample("3", "<audio> and <image>?", [("audio", media["blip"]), ("image", media["image"])])
    [receipts] = model.prepare(*_decoded(model, blip)).receipts
    assert receipts[0].positions == 0 and receipts[1].positions > 0  # 10 ms of audio: no token after the encoder
    assert "audio input 1" in receipt_problem(blip, receipts) and "took no position" in receipt_problem(blip, receipts)


def test_a_prompt_longer_than_the_context_is_refused_by_sample_id(tiny, media):
    model = _model(tiny)
    samples = _samples(media)
    lengths = _posed(model, samples).inputs["attention_mask"].sum(-1).tolist()
    model.context_length = min(lengths)
    with pytest.raises(UnsupportedInput, match=rf"^sample 2: {max(lengths)} positions: longer than .* {min(lengths)} "):
        _posed(model, samples)
    assert _posed(model, samples[:1]).receipts is not None


def _mcub3_data(data_root: Path, media: dict[str, str]) -> None:
    questions = [
        question(1, PROMPT, audio=[media["audio"]], vision=[media["image"]], video=[media["video"]]),
        question(2, PROMPT, audio=[media["audio-2"]], vision=[media["image-2"]], video=[media["long-video"]]),
    ]
    write_json(data_root / "test" / "MCUB-3-image-audio-video.json", questions)
    write_json(data_root / "test" / "MCUB-answer.json", [answer(1, "A"), answer(2, "C")])


def test_a_model_error_becomes_an_error_record_naming_the_sample(tiny, media, tmp_path, monkeypatch):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    forward = Qwen2_5OmniThinkerForConditionalGeneration.forward

    @functools.wraps(forward)  # generate checks its arguments against forward's signature
    def out_of_memory_on_sample_2(self, *args, **kwargs):
        audio_frames = kwargs.get("feature_attention_mask")
        if audio_frames is not None and bool((audio_frames.sum(-1) == 80).any()):  # its 0.8 s of audio
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Qwen2_5OmniThinkerForConditionalGeneration, "forward", out_of_memory_on_sample_2)
    _mcub3_data(tmp_path / "data", media)
    request = mcub.EvalRequest(
        model="qwen2.5-omni-7b", model_args={"pretrained": str(tiny), **SMALL}, tasks=["mcub-3-image-audio-video"],
        data_root=tmp_path / "data", download=False, output_dir=tmp_path / "runs", run_name="r", batch_size=2,
        num_workers=0, max_new_tokens=4, device="cpu", progress=False,
    )  # fmt: skip
    summary = mcub.evaluate(request)
    records = RunFiles(tmp_path / "runs" / "qwen2.5-omni-7b" / "r").records["mcub-3-image-audio-video"]
    assert records["2"].error == "model error: OutOfMemoryError: CUDA out of memory (simulated)"
    assert records["2"].output is None and records["2"].correct is False
    assert records["1"].error is None and isinstance(records["1"].output, str)
    expected = _posed(_model(tiny), _samples(media)[:1]).receipts[0]
    assert [r.positions for r in records["1"].receipts] == [r.positions for r in expected]
    assert [r.details for r in records["1"].receipts] == [r.details for r in expected]
    assert records["1"].media[2]["frame_indices"] == [0, 4, 7, 11]
    assert summary.tasks["mcub-3-image-audio-video"].metrics.errors == 1
    assert summary.model.adapter == "qwen-omni" and summary.model.details["pretrained"] == str(tiny)
    for name in ("config.json", "chat_template.jinja", "processor_config.json", "tokenizer_config.json"):
        assert summary.model.weights[f"pretrained/{name}"] == file_sha256(tiny / name)
