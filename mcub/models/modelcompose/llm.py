"""The composed language model: a transformers Llama with routed LoRA, fed spliced text and modality spans,
with its own greedy decoding and continuation scoring (so routing, padding and positions stay explicit)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mcub.models.modelcompose.fp8 import Fp8Switch
from mcub.models.modelcompose.lora import LANGUAGE, RoutePlan, RoutingState


@dataclass(frozen=True)
class Span:
    """A run of input positions: token ids (text) or embeddings (a modality block: prefix, features, suffix). A
    block's `source` names what it was made from (media content and preprocessing): blocks of one source are the
    same input (None: known only as itself)."""

    route: str
    token_ids: tuple[int, ...] = ()
    embeddings: Tensor | None = None
    source: Hashable | None = None

    def __len__(self) -> int:
        return len(self.token_ids) if self.embeddings is None else self.embeddings.shape[0]


@dataclass
class PackedBatch:
    """Left-padded input embeddings, attention mask, positions and the route plan of a batch."""

    embeddings: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    plan: RoutePlan


@dataclass
class SharedPrefixBatch:
    """A batch whose shared prefixes are prefilled once (see `prefix.py`): `prefixes` holds one row per prefix (of a
    group of samples, or of one sample's own input), `suffixes` one row per sample (what follows its prefix; its
    whole input when it has none), `owner` the prefix row whose cache each sample branches from, `shared` (1 or 0)
    whether it reads that prefix at all, and `offsets` the positions of its prefix."""

    prefixes: PackedBatch
    suffixes: PackedBatch
    owner: Tensor
    shared: Tensor
    offsets: Tensor


@dataclass
class Prefill:
    """What a prefill leaves for the positions after it: the hidden states of the positions it computed last (every
    position, or the suffixes' of a SharedPrefixBatch), the cache, the attention mask over the cache and each row's
    last position."""

    hidden: Tensor
    cache: Any
    attention_mask: Tensor
    last_positions: Tensor


class ComposedLM:
    """Runs a Llama whose projections are routed LoRA layers sharing `state`; with `fp8` (the switch of its FP8
    linears, see fp8.py), prompt passes compute the projections in FP8, decoding and continuation passes in 16 bits."""

    def __init__(self, llama, state: RoutingState, fp8: Fp8Switch | None = None):
        self.llama = llama
        self.state = state
        self.fp8 = fp8
        self._cache_keyword = (
            "cache" if "cache" in inspect.signature(llama.model.forward).parameters else "past_key_values"
        )

    @property
    def device(self) -> torch.device:
        return self.llama.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llama.lm_head.weight.dtype

    @property
    def context_length(self) -> int:
        """The positions the LLM was trained for (`max_position_embeddings`)."""
        return self.llama.config.max_position_embeddings

    def pack(self, samples: Sequence[Sequence[Span]]) -> PackedBatch:
        """Embed and left-pad each sample's spans; record each span's rows under its route.

        Nothing here waits for the device: the layout is worked out on the host, the text of the whole batch is
        embedded at once, and host-to-device copies are non-blocking."""
        embed = self.llama.get_input_embeddings()
        lengths = [sum(len(span) for span in spans) for spans in samples]
        width = max(lengths)
        embeddings = torch.zeros(len(samples), width, embed.weight.shape[1], dtype=self.dtype, device=self.device)
        flat = embeddings.view(-1, embeddings.shape[-1])
        ranges: dict[str, list[tuple[int, int]]] = {}
        text_ids: list[int] = []
        text_rows: list[range] = []
        for row, (spans, length) in enumerate(zip(samples, lengths, strict=True)):
            start = row * width + width - length
            for span in spans:
                if not len(span):
                    continue
                if span.embeddings is None:
                    text_ids.extend(span.token_ids)
                    text_rows.append(range(start, start + len(span)))
                else:
                    flat[start : start + len(span)] = span.embeddings.to(device=self.device, dtype=self.dtype)
                _extend(ranges.setdefault(span.route, []), start, start + len(span))
                start += len(span)
        if text_ids:
            rows = torch.tensor([index for rows in text_rows for index in rows]).to(self.device, non_blocking=True)
            flat.index_copy_(0, rows, embed(torch.tensor(text_ids).to(self.device, non_blocking=True)))
        padding = torch.tensor([width - length for length in lengths]).to(self.device, non_blocking=True)
        mask = (torch.arange(width, device=self.device) >= padding[:, None]).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return PackedBatch(embeddings, mask, positions, RoutePlan(len(samples) * width, ranges))

    def _prompt_pass(self) -> AbstractContextManager:
        """The scope of a prompt's forward pass: FP8 projections on, when the model has them."""
        return self.fp8.prefill() if self.fp8 is not None else nullcontext()

    def _forward(self, embeddings: Tensor, mask: Tensor, positions: Tensor, plan: RoutePlan | None, cache=None):
        self.state.plan = plan
        try:
            output = self.llama.model(
                inputs_embeds=embeddings,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self._cache_keyword: cache},
            )
        finally:
            self.state.plan = None
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        return output.last_hidden_state, cache

    def _prefill(self, batch: PackedBatch | SharedPrefixBatch) -> Prefill:
        """The prompt's forward pass; for a SharedPrefixBatch, the prefixes once, their cache copied to each row that
        shares one (the others see it masked out), then every row's suffix on that cache."""
        with self._prompt_pass():
            return self._prompt_forward(batch)

    def _prompt_forward(self, batch: PackedBatch | SharedPrefixBatch) -> Prefill:
        if isinstance(batch, PackedBatch):
            hidden, cache = self._forward(batch.embeddings, batch.attention_mask, batch.position_ids, batch.plan)
            return Prefill(hidden, cache, batch.attention_mask, batch.position_ids[:, -1:])
        prefixes, suffixes = batch.prefixes, batch.suffixes
        _, cache = self._forward(prefixes.embeddings, prefixes.attention_mask, prefixes.position_ids, prefixes.plan)
        cache.batch_select_indices(batch.owner)
        mask = torch.cat([prefixes.attention_mask[batch.owner] * batch.shared[:, None], suffixes.attention_mask], 1)
        positions = suffixes.position_ids + batch.offsets[:, None]
        hidden, cache = self._forward(suffixes.embeddings, mask, positions, suffixes.plan, cache)
        return Prefill(hidden, cache, mask, positions[:, -1:])

    @torch.inference_mode()
    def last_logits(self, batch: PackedBatch, plan: RoutePlan | None) -> Tensor:
        """The logits of each row's last position after a prefill routed by `plan` (None: the base weights alone,
        the dense forward the bench takes as its roofline)."""
        with self._prompt_pass():
            hidden, _ = self._forward(batch.embeddings, batch.attention_mask, batch.position_ids, plan)
        return self.llama.lm_head(hidden[:, -1])

    @torch.inference_mode()
    def prompt_logits(self, batch: PackedBatch | SharedPrefixBatch) -> Tensor:
        """The logits of each row's last position after its prompt's prefill (shared prefixes computed once)."""
        return self.llama.lm_head(self._prefill(batch).hidden[:, -1])

    @torch.inference_mode()
    def prompt_hidden(self, batch: PackedBatch | SharedPrefixBatch) -> Tensor:
        """The final hidden states of every position (of the suffixes, for a SharedPrefixBatch) after the prefill."""
        return self._prefill(batch).hidden

    @torch.inference_mode()
    def prefill_logits(self, batch: PackedBatch | SharedPrefixBatch) -> Tensor:
        """Logits of every position (of the suffixes, for a SharedPrefixBatch), for tests and references."""
        return self.llama.lm_head(self._prefill(batch).hidden).float()

    @torch.inference_mode()
    def generate(
        self,
        batch: PackedBatch | SharedPrefixBatch,
        max_new_tokens: int,
        eos_id: int,
        finished: Callable[[list[int]], bool] | None = None,
    ) -> list[list[int]]:
        """Greedy new tokens per row, up to EOS (excluded) or `max_new_tokens`, or until `finished(tokens)`."""
        prefill = self._prefill(batch)
        cache = prefill.cache
        logits = self.llama.lm_head(prefill.hidden[:, -1])
        mask, positions = prefill.attention_mask, prefill.last_positions
        rows = mask.shape[0]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        for step in range(max_new_tokens):
            chosen = logits.argmax(-1)
            for row, token in enumerate(chosen.tolist()):
                if done[row]:
                    continue
                if token == eos_id:
                    done[row] = True
                    continue
                tokens[row].append(token)
                done[row] = finished is not None and finished(tokens[row])
            if all(done) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            positions = positions + 1
            embeddings = self.llama.get_input_embeddings()(chosen[:, None])
            hidden, cache = self._forward(embeddings, mask, positions, None, cache)
            logits = self.llama.lm_head(hidden[:, -1])
        return tokens

    @torch.inference_mode()
    def continuation_logprobs(
        self, batch: PackedBatch | SharedPrefixBatch, continuations: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[float]]:
        """Sum of log-probabilities of each row's continuations (token ids) right after its prompt.

        The prompt runs once; one more pass over the continuations' tokens (all rows and options together,
        on the prompt's cache) is needed only when some continuation is longer than one token."""
        prefill = self._prefill(batch)
        cache = prefill.cache
        first = torch.log_softmax(self.llama.lm_head(prefill.hidden[:, -1]).float(), dim=-1)
        scores = [
            [float(first[row, options[0]]) for options in row_options] for row, row_options in enumerate(continuations)
        ]
        longest = max(len(options) for row_options in continuations for options in row_options)
        if longest == 1:
            return scores
        counts = [len(row_options) for row_options in continuations]
        flat = [options for row_options in continuations for options in row_options]
        owner = torch.tensor([row for row, count in enumerate(counts) for _ in range(count)])
        owner = owner.to(self.device, non_blocking=True)
        cache.batch_select_indices(owner)
        steps = longest - 1
        ids = torch.tensor([list(options[:-1]) + [0] * (longest - len(options)) for options in flat])
        ids = ids.to(self.device, non_blocking=True)
        mask = torch.cat([prefill.attention_mask[owner], torch.ones_like(ids)], dim=1)
        positions = prefill.last_positions[owner] + 1 + torch.arange(steps, device=self.device)
        embeddings = self.llama.get_input_embeddings()(ids)
        hidden, _ = self._forward(embeddings, mask, positions, None, cache)
        logprobs = torch.log_softmax(self.llama.lm_head(hidden).float(), dim=-1)
        index = 0
        for row, row_options in enumerate(continuations):
            for option, tokens in enumerate(row_options):
                for step, token in enumerate(tokens[1:]):
                    scores[row][option] += float(logprobs[index, step, token])
                index += 1
        return scores


def _extend(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Append [start, end), merging with the last range when they touch."""
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], end)
    else:
        ranges.append((start, end))


__all__ = ["LANGUAGE", "ComposedLM", "PackedBatch", "SharedPrefixBatch", "Span"]
