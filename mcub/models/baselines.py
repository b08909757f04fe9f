"""Baselines: `random` (seeded chance) and `blind` (a causal LM that answers from the text alone)."""

from __future__ import annotations

from pathlib import Path

from mcub.hashing import derived_seed
from mcub.media import MediaInput
from mcub.modalities import MODALITIES
from mcub.models.base import (
    FirstCharacterStop,
    Model,
    PreparedBatch,
    Runtime,
    Stop,
    compute_dtype,
    refuse_beyond_context,
    scored_from,
)
from mcub.models.baseline_arguments import BlindArguments, RandomArguments
from mcub.models.weight_hashes import small_file_hashes
from mcub.prompts import strip_placeholders, vicuna_v1
from mcub.schema import ModelDescription, Sample


def sample_seed(seed: int, sample: Sample) -> int:
    """A per-sample seed that depends on nothing but the run seed and the sample's identity."""
    return derived_seed(seed, sample.task, sample.id)


class RandomModel(Model):
    """Uniform choice over a question's options, seeded per sample; open questions get an empty answer."""

    modalities = frozenset(MODALITIES)
    media_preprocessing = None
    reads_media = False

    def __init__(self, runtime: Runtime, arguments: RandomArguments | None = None):
        seed = arguments.seed if arguments else None
        self.seed = runtime.seed if seed is None else seed

    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        return PreparedBatch(samples, [vicuna_v1(sample.prompt) for sample in samples])

    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        import numpy as np

        answers = []
        for sample in batch.samples:
            if not sample.options:
                answers.append("")
                continue
            key = list(sample.options)[
                np.random.default_rng(sample_seed(self.seed, sample)).integers(len(sample.options))
            ]
            answers.append(key if len(key) == 1 and key.isalpha() else sample.options[key])
        return answers

    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        import numpy as np

        return [
            np.log(np.random.default_rng(sample_seed(self.seed, sample)).random(len(options))).tolist()
            for sample, options in zip(batch.samples, continuations, strict=True)
        ]

    def describe(self) -> ModelDescription:
        return ModelDescription(adapter="random", details={"seed": self.seed})


class BlindModel(Model):
    """A Hugging Face causal LM under the vicuna_v1 template, with every media placeholder removed."""

    modalities = frozenset(MODALITIES)
    media_preprocessing = None
    reads_media = False

    def __init__(self, runtime: Runtime, arguments: BlindArguments):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.pretrained = pretrained = arguments.pretrained
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=compute_dtype(runtime.dtype))
        self.model.to(runtime.device).eval()

    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        prompts = [vicuna_v1(strip_placeholders(sample.prompt)) for sample in samples]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None:
            refuse_beyond_context(samples, [len(ids) for ids in self.tokenizer(prompts).input_ids], limit)
        return PreparedBatch(samples, prompts)

    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        import torch
        from transformers import StoppingCriteriaList

        encoded = self.tokenizer(batch.prompts, return_tensors="pt", padding=True).to(self.runtime.device)
        criteria = StoppingCriteriaList(
            [FirstCharacterStop(self.tokenizer, encoded.input_ids.shape[1])] if stop == "first-character" else []
        )
        with torch.inference_mode():
            generated = self.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=criteria,
            )
        new_tokens = generated[:, encoded.input_ids.shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        return [
            self._continuation_logliks(prompt, options)
            for prompt, options in zip(batch.prompts, continuations, strict=True)
        ]

    def _continuation_logliks(self, prompt: str, continuations: list[str]) -> list[float]:
        """Sum of token log-probabilities of `prompt + " " + continuation` after the tokens it shares with
        the prompt alone (so tokenisation merges at the boundary are scored, not dropped)."""
        import torch

        context = self.tokenizer(prompt).input_ids
        full = [self.tokenizer(f"{prompt} {text}").input_ids for text in continuations]
        starts = [scored_from(context, ids) for ids in full]
        width = max(len(ids) for ids in full)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in full], device=self.runtime.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in full], device=self.runtime.device)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:]
        token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return [
            float(token_logprobs[row, start - 1 : len(ids) - 1].sum())
            for row, (ids, start) in enumerate(zip(full, starts, strict=True))
        ]

    def describe(self) -> ModelDescription:
        """The LLM's small files are hashed (config, tokenizer, shard index), which identify its weight shards."""
        from transformers.utils import cached_file

        directory = Path(cached_file(self.pretrained, "config.json", local_files_only=True)).parent
        return ModelDescription(
            adapter="blind",
            weights=small_file_hashes("pretrained", directory),
            details={"pretrained": self.pretrained, "directory": str(directory)},
        )
