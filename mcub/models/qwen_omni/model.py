"""The Qwen2.5-Omni adapter: a checkpoint's thinker (text answers; the talker is never loaded) and its processor,
behind the harness's Model interface. Prompts are the model's chat template with its system prompt; media reach the
processor as mcub's workers decoded them (`rgb`, `qwen-omni-2fps`, `waveform-16k`), and the processor resizes,
patches and tokenises them. The receipts count each input's tokens in what the processor returned."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mcub.errors import UnsupportedInput
from mcub.media import MediaInput, consumed
from mcub.media.video import QWEN_OMNI_SAMPLING
from mcub.models.base import (
    FirstCharacterStop,
    Model,
    ModelError,
    PreparedBatch,
    Runtime,
    Stop,
    compute_dtype,
    refuse_beyond_context,
    scored_from,
)
from mcub.models.qwen_omni.arguments import QwenOmniArguments
from mcub.models.qwen_omni.compat import TransformersCalls
from mcub.models.qwen_omni.conversation import DEFAULT_SYSTEM_PROMPT, conversation
from mcub.models.qwen_omni.spans import MediaTokens, media_spans, positions
from mcub.models.weight_hashes import small_file_hashes
from mcub.schema import MediaReceipt, ModelDescription, Sample

GREEDY: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "temperature": None,
    "top_p": None,
    "top_k": None,
    "repetition_penalty": 1.0,
}
"""Greedy decoding, whatever sampling the checkpoint's generation_config.json sets (None: no sampling warper)."""
ENCODER_INPUTS = ("pixel_values", "pixel_values_videos", "input_features")
"""The processor's outputs that take the model's dtype (the others keep theirs)."""


@dataclass(frozen=True)
class _Place:
    """Where one media input went among the processor's inputs: its index among the batch's inputs of its modality,
    and its slot among the audio inputs (a standalone audio, or the own audio of a video)."""

    index: int
    audio_slot: int | None = None


@dataclass
class _ProcessorMedia:
    """A batch's media as the processor takes them: flat per modality, in placeholder order, sample after sample."""

    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    audio: list[Any] = field(default_factory=list)
    audio_sources: list[int | None] = field(default_factory=list)
    """Per audio slot, the video it is the audio track of (None: a standalone audio)."""
    places: list[list[_Place]] = field(default_factory=list)


class QwenOmniModel(Model):
    """Qwen2.5-Omni's thinker under its own chat template, processor and greedy decoding (see QwenOmniArguments)."""

    modalities = frozenset({"image", "video", "audio"})

    def __init__(self, runtime: Runtime, arguments: QwenOmniArguments):
        if importlib.util.find_spec("torchvision") is None:
            raise ModelError(
                "qwen-omni: transformers' Qwen2.5-Omni processor needs torchvision (its video processor), "
                "which is not installed"
            )
        from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

        self.arguments = arguments
        self.runtime = runtime
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if arguments.system_prompt is None else arguments.system_prompt
        self.media_preprocessing = {
            "image": "rgb",
            "video": "qwen-omni-2fps-audio" if arguments.use_audio_in_video else "qwen-omni-2fps",
            "audio": "waveform-16k",
        }
        try:
            self.processor = Qwen2_5OmniProcessor.from_pretrained(
                arguments.pretrained, local_files_only=runtime.offline
            )
            self.model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                arguments.pretrained, dtype=compute_dtype(runtime.dtype), local_files_only=runtime.offline
            )
        except OSError as error:
            raise ModelError(
                f"qwen-omni: cannot load {arguments.pretrained} ({error}); "
                "point at a local copy with --model-arg pretrained=PATH"
            ) from None
        self.model.to(runtime.device).eval()
        self.calls = TransformersCalls.of(self.processor, self.model)
        processor, tokenizer = self.processor, self.processor.tokenizer
        token_id = tokenizer.convert_tokens_to_ids
        self.tokens = MediaTokens(
            image=token_id(processor.image_token),
            video=token_id(processor.video_token),
            audio=token_id(processor.audio_token),
            starts=frozenset({token_id(processor.vision_bos_token), token_id(processor.audio_bos_token)}),
            ends=frozenset({token_id(processor.vision_eos_token), token_id(processor.audio_eos_token)}),
        )
        self.eos_token_ids = _eos_token_ids(self.model.generation_config.eos_token_id, tokenizer.eos_token_id)
        self.pad_token_id = self.eos_token_ids[0] if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        self.context_length = self.model.config.get_text_config().max_position_embeddings

    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        """One conversation per sample through the chat template, and the processor over the whole batch (left
        padding); a sample longer than the thinker's context is refused by id."""
        prompts = [
            self.processor.apply_chat_template(
                conversation(sample, self.system_prompt), add_generation_prompt=True, tokenize=False
            )
            for sample in samples
        ]
        gathered = self._gather(samples, media)
        arguments = self.arguments
        encoded = self.processor(
            text=prompts,
            images=gathered.images or None,
            videos=gathered.videos or None,
            audio=gathered.audio or None,
            **self.calls.audio_in_video(arguments.use_audio_in_video, gathered.audio_sources),
            padding=True,
            padding_side="left",
            return_tensors="pt",
            images_kwargs={
                "size": {"shortest_edge": arguments.image_min_pixels, "longest_edge": arguments.image_max_pixels}
            },
            videos_kwargs={
                "size": {"shortest_edge": arguments.video_min_pixels, "longest_edge": arguments.video_max_pixels},
                "do_sample_frames": False,
                "cap_pixels_per_frame": True,
            },
        )
        refuse_beyond_context(samples, encoded["attention_mask"].sum(-1).tolist(), self.context_length)
        return PreparedBatch(samples, prompts, encoded, self._receipts(samples, media, encoded, gathered.places))

    def _gather(self, samples: list[Sample], media: list[list[MediaInput]]) -> _ProcessorMedia:
        from PIL import Image

        with_audio = self.arguments.use_audio_in_video
        gathered = _ProcessorMedia()
        for sample, items in zip(samples, media, strict=True):
            places = []
            for item in items:
                if item.modality == "image":
                    places.append(_Place(len(gathered.images)))
                    gathered.images.append(Image.fromarray(item.tensors["pixels"].numpy()))
                elif item.modality == "video":
                    places.append(_Place(len(gathered.videos), len(gathered.audio) if with_audio else None))
                    if with_audio:
                        gathered.audio.append(item.tensors["audio"].numpy())
                        gathered.audio_sources.append(len(gathered.videos))
                    gathered.videos.append(item.tensors["frames"].permute(0, 3, 1, 2))
                elif item.modality == "audio":
                    places.append(_Place(len(gathered.audio), len(gathered.audio)))
                    gathered.audio.append(item.tensors["waveform"].numpy())
                    gathered.audio_sources.append(None)
                else:
                    raise UnsupportedInput(f"sample {sample.id}: Qwen2.5-Omni takes no {item.modality} input")
            gathered.places.append(places)
        return gathered

    def _receipts(
        self, samples: list[Sample], media: list[list[MediaInput]], encoded, places: list[list[_Place]]
    ) -> list[list[MediaReceipt]]:
        """Per sample, each media input's span in the processor's input_ids: its tokens, and what they hold."""
        receipts = []
        for row, (sample, items, row_places) in enumerate(zip(samples, media, places, strict=True)):
            ids = encoded["input_ids"][row][encoded["attention_mask"][row].bool()].tolist()
            spans = media_spans(ids, self.tokens)
            if len(spans) != len(items):
                raise UnsupportedInput(
                    f"sample {sample.id}: {len(spans)} media span(s) in its tokenised prompt for {len(items)} input(s)"
                )
            receipts.append(
                [
                    MediaReceipt(
                        modality=item.modality,
                        path=item.path,
                        positions=positions(item.modality, span),
                        details=self._details(item, place, encoded),
                    )
                    for item, span, place in zip(items, spans, row_places, strict=True)
                ]
            )
        return receipts

    def _details(self, item: MediaInput, place: _Place, encoded) -> dict[str, Any]:
        """What the processor made of an input: an audio's seconds fed (the feature extractor may cut it), an image's
        or a video's patch grid and resized size, a video's frame rate and seconds per temporal patch."""
        decoded = consumed(item)
        if item.modality == "audio":
            return {"seconds": self._fed_seconds(encoded, place.audio_slot), "decoded_seconds": decoded["seconds"]}
        processor = self.processor.image_processor if item.modality == "image" else self.processor.video_processor
        grid = encoded[f"{item.modality}_grid_thw"][place.index].tolist()
        details = {**decoded, "grid": grid, "resized": [side * processor.patch_size for side in grid[1:]]}
        if item.modality == "video":
            details["sample_fps"] = item.provenance["sample_fps"]
            details["seconds_per_grid"] = float(encoded["video_second_per_grid"][place.index])
            if place.audio_slot is not None:
                details["audio_seconds"] = self._fed_seconds(encoded, place.audio_slot)
        return details

    def _fed_seconds(self, encoded, slot: int | None) -> float:
        extractor = self.processor.feature_extractor
        frames = int(encoded["feature_attention_mask"][slot].sum())
        return round(frames * extractor.hop_length / extractor.sampling_rate, 6)

    def _model_inputs(self, encoded) -> dict[str, Any]:
        device, dtype = self.model.device, self.model.dtype
        return {
            key: value.to(device, dtype) if key in ENCODER_INPUTS else value.to(device)
            for key, value in encoded.items()
        }

    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        from transformers import StoppingCriteriaList

        inputs = self._model_inputs(batch.inputs)
        width = inputs["input_ids"].shape[1]
        tokenizer = self.processor.tokenizer
        criteria = StoppingCriteriaList([FirstCharacterStop(tokenizer, width)] if stop == "first-character" else [])
        with torch.inference_mode():
            generated = self.model.generate(
                **inputs,
                use_audio_in_video=self.arguments.use_audio_in_video,
                max_new_tokens=max_new_tokens,
                eos_token_id=self.eos_token_ids,
                pad_token_id=self.pad_token_id,
                stopping_criteria=criteria,
                **GREEDY,
            )
        return tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)

    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        """Per sample, the sum of the token log-probabilities of `prompt + continuation` after the tokens it shares
        with the prompt alone (a merge at the boundary is scored, as the blind baseline does). The prompts run once,
        their last `cut` tokens left for the continuations to carry where a continuation re-tokenises them (text
        after the last special token, so never media); one more pass on the prompts' cache scores continuations of
        more than one token."""
        tokenizer = self.processor.tokenizer
        contexts = [tokenizer(prompt).input_ids for prompt in batch.prompts]
        rows = [
            (row, tokenizer(prompt + text).input_ids)
            for row, (prompt, options) in enumerate(zip(batch.prompts, continuations, strict=True))
            for text in options
        ]
        if not rows:
            return [[] for _ in batch.prompts]
        starts = [scored_from(contexts[row], ids) for row, ids in rows]
        cut = max(len(contexts[row]) - start for (row, _), start in zip(rows, starts, strict=True))
        tails = []  # (sample row, the tokens after its prompt less `cut`, the first of them scored)
        for (row, ids), start in zip(rows, starts, strict=True):
            kept = len(contexts[row]) - cut
            tails.append((row, ids[kept:], start - kept))
        first, later = self._tail_logprobs(batch, [(row, tokens) for row, tokens, _ in tails], cut)
        scores: list[list[float]] = [[] for _ in batch.prompts]
        for index, (row, tokens, start) in enumerate(tails):
            logprobs = [first[row, tokens[0]]] + [later[index, step, token] for step, token in enumerate(tokens[1:])]
            scores[row].append(float(sum(logprobs[start:])))
        return scores

    def _tail_logprobs(self, batch: PreparedBatch, tails: list[tuple[int, list[int]]], cut: int):
        """Log-probabilities after the prompts less their last `cut` tokens (per sample row), and at each step of
        the tails that follow them but the last (per tail; None when every tail is one token). Both passes are the
        thinker's own forward, as in generation (its logits over the whole prompt are dropped but the last)."""
        inputs = self._model_inputs(batch.inputs)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        feature_mask = inputs.get("feature_attention_mask")
        rope, _ = self.model.get_rope_index(
            ids,
            inputs.get("image_grid_thw"),
            inputs.get("video_grid_thw"),
            mask,
            self.arguments.use_audio_in_video,
            feature_mask.sum(-1) if feature_mask is not None else None,
            inputs.get("video_second_per_grid"),
        )
        kept = ids.shape[1] - cut
        audio_in_video, cache = self.arguments.use_audio_in_video, self.calls.cache
        with torch.inference_mode():
            prompt = self.model(
                **{**inputs, "input_ids": ids[:, :kept], "attention_mask": mask[:, :kept]},
                position_ids=rope[:, :, :kept],
                use_cache=True,
                use_audio_in_video=audio_in_video,
            )
            first = torch.log_softmax(prompt.logits[:, -1].float(), dim=-1)
            prompt_cache = getattr(prompt, cache)
            del prompt
            steps = max(len(tokens) for _, tokens in tails) - 1
            if steps == 0:
                return first, None
            device = ids.device
            owner = torch.tensor([row for row, _ in tails], device=device)
            prompt_cache.batch_select_indices(owner)
            step_ids = torch.tensor(
                [tokens[:-1] + [self.pad_token_id] * (steps + 1 - len(tokens)) for _, tokens in tails], device=device
            )
            step_mask = torch.tensor([[1] * (len(t) - 1) + [0] * (steps + 1 - len(t)) for _, t in tails], device=device)
            later = self.model(
                input_ids=step_ids,
                attention_mask=torch.cat([mask[owner, :kept], step_mask], dim=1),
                position_ids=rope[:, owner, kept - 1 : kept] + 1 + torch.arange(steps, device=device),
                use_cache=True,
                use_audio_in_video=audio_in_video,
                **{cache: prompt_cache},
            )
            return first, torch.log_softmax(later.logits.float(), dim=-1)

    def describe(self) -> ModelDescription:
        """The checkpoint's small files are hashed (config, tokenizer, processor and chat template, shard index),
        which identify its weight shards."""
        from transformers.utils import cached_file

        arguments = self.arguments
        directory = Path(cached_file(arguments.pretrained, "config.json", local_files_only=True)).parent
        return ModelDescription(
            adapter="qwen-omni",
            weights=small_file_hashes("pretrained", directory),
            details={
                "pretrained": arguments.pretrained,
                "directory": str(directory),
                "parts": "thinker (text answers; no talker)",
                "use_audio_in_video": arguments.use_audio_in_video,
                "system_prompt": self.system_prompt,
                "media_preprocessing": self.media_preprocessing,
                "video_sampling": QWEN_OMNI_SAMPLING,
                "pixels": {
                    "image": [arguments.image_min_pixels, arguments.image_max_pixels],
                    "video_frame": [arguments.video_min_pixels, arguments.video_max_pixels],
                    "video_total_cap": "cap_pixels_per_frame (qwen-omni-utils' VIDEO_TOTAL_PIXELS)",
                },
                "decoding": {**GREEDY, "eos_token_ids": self.eos_token_ids},
            },
        )


def _eos_token_ids(configured: int | list[int] | None, tokenizer_eos: int | None) -> list[int]:
    """The generation config's end-of-sequence tokens and the tokenizer's (Qwen's `<|im_end|>`)."""
    found = configured if isinstance(configured, list) else [] if configured is None else [configured]
    ids = sorted({*found, *([] if tokenizer_eos is None else [tokenizer_eos])})
    if not ids:
        raise ModelError("qwen-omni: neither the generation config nor the tokenizer names an end-of-sequence token")
    return ids
