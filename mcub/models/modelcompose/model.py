"""The ModelCompose adapter: a DAMC or NaiveMC composition (or a merged checkpoint) on Vicuna, with the encoders
and projectors of its modalities, behind the harness's Model interface."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mcub.errors import UnsupportedInput
from mcub.media import MediaInput, consumed
from mcub.modalities import Modality
from mcub.models.base import (
    FP8,
    Model,
    ModelError,
    PreparedBatch,
    Runtime,
    Stop,
    compute_dtype,
    compute_dtype_name,
    first_character_complete,
    refuse_beyond_context,
)
from mcub.models.feature_cache import FEATURES, FeatureCache, weights_fingerprint
from mcub.models.modelcompose.arguments import ModelComposeArguments
from mcub.models.modelcompose.checkpoint import Checkpoint, read_checkpoint
from mcub.models.modelcompose.components import Component, resolve_components
from mcub.models.modelcompose.compose import Composition, compose_merged
from mcub.models.modelcompose.language_merges import compose_by_method
from mcub.models.modelcompose.llm import LANGUAGE, ComposedLM, PackedBatch, SharedPrefixBatch, Span
from mcub.models.modelcompose.prefix import PrefixGroup, pack_shared, shared_prefixes
from mcub.models.modelcompose.tokenization import load_chunk_tokenizer
from mcub.models.weight_hashes import weight_hashes
from mcub.prompts import vicuna_v1
from mcub.schema import MediaReceipt, ModelDescription, Sample, SharedPrefix

MEDIA_PREPROCESSING: dict[Modality, str] = {
    "image": "clip-336-pad",
    "video": "languagebind-224",
    "audio": "beats-fbank-reference-mask",
    "point": "stored",
}

# The order in which a batch's modalities are encoded. The device runs the heavy encoders (video, image) while the
# host is still issuing the many small kernels of Point-BERT's farthest-point sampling; BEATs checks its padding
# mask on the host, which waits for the device, so it comes last, just before the LLM (which waits anyway).
ENCODING_ORDER: tuple[Modality, ...] = ("video", "image", "point", "audio")


class ModelComposeModel(Model):
    """DAMC / NaiveMC: experts composed at load time (`experts` + `lambdas`) or a merged checkpoint (`merged`), with
    the encoders of its modalities only (see ModelComposeArguments)."""

    def __init__(self, runtime: Runtime, arguments: ModelComposeArguments):
        check_route_weights(runtime.dtype, arguments.route_weights)
        self.runtime = runtime
        wanted = [Component("base LLM (Vicuna)", arguments.base, "base")]
        wanted += [Component(f"{m} expert", ref, f"experts.{m}") for m, ref in (arguments.experts or {}).items()]
        wanted += [Component("merged checkpoint", arguments.merged, "merged")] if arguments.merged else []
        encoders = arguments.used_encoders()
        wanted += [Component(f"{m} encoder", ref, f"encoders.{m}") for m, ref in encoders.items()]
        paths = resolve_components(wanted, runtime.offline)
        if arguments.experts is not None:
            allow = arguments.allow_nonfinite_weights
            checkpoints = {m: read_checkpoint(paths[f"{m} expert"], allow) for m in arguments.experts}
            self.composition = compose_by_method(
                checkpoints, arguments.coefficients(), arguments.kind, arguments.composition_args
            )
        else:
            merged = read_checkpoint(paths["merged checkpoint"], arguments.allow_nonfinite_weights)
            _check_stated_modalities(merged, arguments.input_modalities())
            self.composition = compose_merged(merged)
        unplaced = [
            Component(f"{m} encoder", parts.encoder or "(none in config.json)", f"encoders.{m}")
            for m, parts in self.composition.modalities.items()
            if f"{m} encoder" not in paths
        ]
        paths.update(resolve_components(unplaced, runtime.offline))
        self.base_path = paths["base LLM (Vicuna)"]
        self.encoder_paths = {m: paths[f"{m} encoder"] for m in self.composition.modalities}
        dtype = compute_dtype(runtime.dtype)
        llama = load_llama(self.base_path, dtype)
        point_encoder = dict(arguments.point_encoder or {})
        encoder_modules = {
            m: load_encoder(m, path, self.composition.modalities[m].select_layer, point_encoder)
            for m, path in self.encoder_paths.items()
        }
        tokenizer = load_chunk_tokenizer(self.base_path)
        self._assemble(runtime, self.composition, llama, tokenizer, encoder_modules, arguments.route_weights)
        self.share_prefixes = arguments.share_prefixes
        self.feature_cache = (
            FeatureCache(
                Path(arguments.feature_cache).expanduser(),
                {
                    m: weights_fingerprint(
                        path,
                        m,
                        self.composition.modalities[m].select_layer,
                        compute_dtype_name(runtime.dtype),  # an fp8 run's encoders compute in bfloat16
                        arguments.point_encoder,
                    )
                    for m, path in self.encoder_paths.items()
                },
            )
            if arguments.feature_cache
            else None
        )

    @classmethod
    def from_parts(
        cls,
        runtime: Runtime,
        composition: Composition,
        llama,
        tokenizer,
        encoders,
        share_prefixes: bool = True,
        route_weights: str = "factors",
    ) -> ModelComposeModel:
        """A model from parts already in memory (benchmarks with random weights), without a feature cache until one
        is set as `feature_cache`."""
        check_route_weights(runtime.dtype, route_weights)
        model = cls.__new__(cls)
        model.base_path = None
        model.encoder_paths = {}
        model.feature_cache = None
        model.share_prefixes = share_prefixes
        model._assemble(runtime, composition, llama, tokenizer, encoders, route_weights)
        return model

    def _assemble(
        self, runtime: Runtime, composition: Composition, llama, tokenizer, encoders, route_weights: str
    ) -> None:
        """Install the routed LoRA into `llama` (merged into one weight per route when `route_weights` is
        "merged"; for `fp8`, the FP8 prefill linears over its final base weights), load the projectors and local
        tokens, place everything."""
        from mcub.models.modelcompose.fp8 import install_fp8_prefill
        from mcub.models.modelcompose.language_delta import apply_language_delta, language_route_sha256
        from mcub.models.modelcompose.lora import RoutingState, install_routed_lora
        from mcub.models.modelcompose.merged_routes import added_bytes, merge_route_weights
        from mcub.models.modelcompose.projectors import build_projector

        self.runtime = runtime
        self.composition = composition
        self.modalities = frozenset(composition.modalities)
        self.media_preprocessing = {m: MEDIA_PREPROCESSING[m] for m in self.modalities}
        dtype = compute_dtype(runtime.dtype)
        device = torch.device(runtime.device)
        llama = llama.to(device=device, dtype=dtype).eval()
        state = RoutingState()
        digest = language_route_sha256(composition, dtype)
        install_routed_lora(llama.model.layers, composition.adapters, composition.routes, state)
        composition.adapters.clear()
        apply_language_delta(llama.model.layers, composition, state, digest)
        self.language_delta_sha256 = digest.hexdigest()
        self.route_weights = route_weights
        if route_weights == "merged":
            check_room_for_merged_routes(added_bytes(llama.model.layers, composition.routes), device)
            merge_route_weights(llama.model.layers, state, composition.routes)
        fp8 = install_fp8_prefill(llama.model.layers) if runtime.dtype == FP8 else None
        self.lm = ComposedLM(llama, state, fp8)
        self.tokenizer = tokenizer
        hidden = llama.config.hidden_size
        self.encoders: dict[Modality, torch.nn.Module] = {}
        self.projectors: dict[Modality, torch.nn.Module] = {}
        self.local_tokens: dict[Modality, tuple[Tensor | None, Tensor | None]] = {}
        for modality, parts in composition.modalities.items():
            self.encoders[modality] = encoders[modality].to(device=device, dtype=dtype).eval()
            projector = build_projector(parts.projector_kind, parts.projector_width, hidden)
            result = projector.load_state_dict(parts.projector_state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ModelError(
                    f"{modality} projector ({parts.projector_kind}): missing {result.missing_keys}, "
                    f"unexpected {result.unexpected_keys}"
                )
            self.projectors[modality] = projector.to(device=device, dtype=dtype).eval()
            self.local_tokens[modality] = tuple(
                None if t is None else t[0].to(device=device, dtype=dtype) for t in (parts.prefix, parts.suffix)
            )

    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        prompts = [vicuna_v1(sample.prompt) for sample in samples]
        encoded = [self.tokenizer.encode_prompt(prompt) for prompt in prompts]
        blocks = self._modality_blocks(samples, media)
        spans = []
        for sample, tokens, sample_blocks, items in zip(samples, encoded, blocks, media, strict=True):
            own_blocks = iter(zip(sample_blocks, items, strict=True))
            sample_spans: list[Span] = []
            text: list[int] = []
            for token in tokens:
                if isinstance(token, int):
                    text.append(token)
                    continue
                if text:
                    sample_spans.append(Span(LANGUAGE, token_ids=tuple(text)))
                    text = []
                (modality, block), item = next(own_blocks)
                if modality != token:
                    raise UnsupportedInput(f"sample {sample.id}: a {token} placeholder meets {modality} media")
                route = self.composition.modalities[modality].route
                sample_spans.append(Span(route, embeddings=block, source=_block_source(item)))
            if text:
                sample_spans.append(Span(LANGUAGE, token_ids=tuple(text)))
            spans.append(sample_spans)
        refuse_beyond_context(samples, [sum(map(len, sample_spans)) for sample_spans in spans], self.lm.context_length)
        prefixes: list[SharedPrefix | None] = [None] * len(samples)
        for group in shared_prefixes(spans) if self.share_prefixes else []:
            ids = [samples[row].id for row in group.rows]
            for row in group.rows:
                prefixes[row] = SharedPrefix(positions=group.positions, samples=ids)
        return PreparedBatch(samples, prompts, spans, _receipts(media, spans), prefixes)

    def _pack(self, batch: PreparedBatch) -> PackedBatch | SharedPrefixBatch:
        """The LLM's input for a prepared batch: the shared prefixes `prepare` found (and reported) computed once."""
        groups = _prefix_groups(batch.prefixes or [])
        return pack_shared(self.lm, batch.inputs, groups) if groups else self.lm.pack(batch.inputs)

    @torch.inference_mode()
    def _modality_blocks(
        self, samples: list[Sample], media: list[list[MediaInput]]
    ) -> list[list[tuple[Modality, Tensor]]]:
        """Per sample, its media in order as (modality, prefix + projected features + suffix), each modality
        encoded for the whole batch at once."""
        places: dict[Modality, list[tuple[int, int]]] = {}
        for row, items in enumerate(media):
            for index, item in enumerate(items):
                if item.modality not in self.encoders:
                    raise UnsupportedInput(f"sample {samples[row].id}: this model has no {item.modality} encoder")
                places.setdefault(item.modality, []).append((row, index))
        blocks: list[list[Any]] = [[None] * len(items) for items in media]
        for modality, where in sorted(places.items(), key=lambda item: ENCODING_ORDER.index(item[0])):
            outputs = self._encode(modality, [media[row][index] for row, index in where])
            for (row, index), output in zip(where, outputs, strict=True):
                blocks[row][index] = (modality, output)
        return blocks

    def _encode(self, modality: Modality, items: list[MediaInput]) -> list[Tensor]:
        """Encode (or take from the feature cache), project and wrap in local tokens a list of one modality's
        inputs, batched where shapes agree; files of the same content and preprocessing are encoded once."""
        device, dtype = self.lm.device, self.lm.dtype
        features: list[Tensor | None] = [
            item.tensors[FEATURES].to(device, non_blocking=True) if FEATURES in item.tensors else None for item in items
        ]
        contents = [_content(item, index) for index, item in enumerate(items)]
        first_of: dict[tuple, int] = {}
        for index, found in enumerate(features):
            if found is None:
                first_of.setdefault(contents[index], index)
        missing = list(first_of.values())
        for indices in _same_shape(missing, lambda i: tuple(tuple(t.shape) for t in items[i].tensors.values())):
            stacked = {
                key: torch.stack([items[i].tensors[key].to(device, non_blocking=True) for i in indices])
                for key in items[indices[0]].tensors
            }
            encoded = self._run_encoder(modality, stacked)
            for position, index in enumerate(indices):
                features[index] = encoded[position]
                if self.feature_cache:
                    self.feature_cache.store(items[index], encoded[position])
        for index, found in enumerate(features):
            if found is None:
                features[index] = features[first_of[contents[index]]]
        prefix, suffix = self.local_tokens[modality]
        outputs: list[Tensor | None] = [None] * len(items)
        for indices in _same_shape(range(len(items)), lambda i: tuple(features[i].shape)):
            projected = self.projectors[modality](torch.stack([features[i] for i in indices]).to(dtype))
            for position, index in enumerate(indices):
                outputs[index] = torch.cat([t for t in (prefix, projected[position], suffix) if t is not None])
        return outputs  # type: ignore[return-value]

    def _run_encoder(self, modality: Modality, stacked: dict[str, Tensor]) -> Tensor:
        encoder, dtype = self.encoders[modality], self.lm.dtype
        if modality == "audio":
            return encoder(stacked["fbank"].to(dtype), stacked["padding_mask"])[0]
        if modality == "point":
            return encoder(stacked["points"].to(dtype))
        return encoder(stacked["pixel_values"].to(dtype))

    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        packed = self._pack(batch)
        finished = (
            (lambda tokens: first_character_complete(self.tokenizer.decode(tokens)))
            if stop == "first-character"
            else None
        )
        tokens = self.lm.generate(packed, max_new_tokens, self.tokenizer.eos_id, finished)
        return [self.tokenizer.decode(row) for row in tokens]

    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        packed = self._pack(batch)
        token_ids = [[self.tokenizer.encode_text(text) for text in options] for options in continuations]
        return self.lm.continuation_logprobs(packed, token_ids)

    def describe(self) -> ModelDescription:
        """The experts' (or the merged checkpoint's) adapter files and the single-file encoders are hashed whole; the
        base LLM and the encoders kept as directories by their small files (config, tokenizer, shard index), which
        identify their weight shards."""
        weights: dict[str, str] = {}
        if self.base_path:
            weights |= weight_hashes("base", Path(self.base_path))
        for source in self.composition.sources:
            weights["merged" if "merged_checkpoint" in source else f"experts.{source['modality']}"] = source["sha256"]
        for modality, path in self.encoder_paths.items():
            weights |= weight_hashes(f"encoders.{modality}", Path(path))
        return ModelDescription(
            adapter="modelcompose",
            weights=weights,
            details={
                "composition": self.composition.kind,
                "method": self.composition.method,
                "language_delta_sha256": self.language_delta_sha256,
                "base": str(self.base_path) if self.base_path else None,
                "sources": self.composition.sources,
                "routes": {
                    name: [list(item) for item in route.adapters] for name, route in self.composition.routes.items()
                },
                "encoders": {m: str(path) for m, path in self.encoder_paths.items()},
                "media_preprocessing": self.media_preprocessing,
                "feature_cache": str(self.feature_cache.directory) if self.feature_cache else None,
                "share_prefixes": self.share_prefixes,
                "route_weights": self.route_weights,
                "fp8_prefill": self._fp8_prefill(),
                "notes": self.composition.notes,
            },
        )

    def _fp8_prefill(self) -> dict[str, str] | None:
        """How an fp8 run's prefill quantises and multiplies (None: a 16-bit run)."""
        from mcub.models.modelcompose.fp8 import gemm_name

        if self.lm.fp8 is None:
            return None
        return {
            "weights": "float8_e4m3fn, one scale per output channel, quantised at load",
            "activations": "float8_e4m3fn, one scale per token",
            "gemm": gemm_name(self.lm.llama.model.layers),
            "compute_dtype": compute_dtype_name(self.runtime.dtype),
        }


def _check_stated_modalities(checkpoint: Checkpoint, stated: tuple[Modality, ...]) -> None:
    """A merged checkpoint takes the modalities its model states (those its config.json places encoders for)."""
    if set(checkpoint.modalities) != set(stated):
        found = "+".join(checkpoint.modalities) or "no modality"
        raise ModelError(
            f"{checkpoint.directory / 'config.json'}: configured for {found}, but the model states "
            f"modalities {'+'.join(stated)}"
        )


def check_route_weights(dtype: str, route_weights: str) -> None:
    """Merged routes keep no base projection for the FP8 prefill to quantise: that pair is refused."""
    if dtype == FP8 and route_weights == "merged":
        raise ModelError(
            f"dtype {FP8} quantises the base projections beside the factored routes; `route_weights: merged` keeps "
            "none: run fp8 with the factored routes (the default) or the merged routes in 16 bits"
        )


def check_room_for_merged_routes(needed: int, device: torch.device, free: int | None = None) -> None:
    """Merged routes refused, before any is made, where the device has less free memory than they add (`free`: the
    device's free bytes, asked of CUDA when not given, counting what torch's allocator holds unused as free; other
    devices are not checked)."""
    if free is None:
        if device.type != "cuda":
            return
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        free = torch.cuda.mem_get_info(device)[0] + unused
    if needed > free:
        raise ModelError(
            f"route_weights=merged adds {needed / 2**30:.2f} GiB of merged weights on {device}, where "
            f"{free / 2**30:.2f} GiB are free: use the factored routes (the default) or a device with more memory"
        )


def load_llama(path: Path, dtype):
    """The base LLM (Vicuna) of a local transformers directory."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path, dtype=dtype)


def _receipts(media: list[list[MediaInput]], spans: list[list[Span]]) -> list[list[MediaReceipt]]:
    """Per sample, each media input's routed span: its positions (local tokens included) and what was decoded."""
    receipts = []
    for items, sample_spans in zip(media, spans, strict=True):
        routed = [span for span in sample_spans if span.embeddings is not None]
        receipts.append(
            [
                MediaReceipt(modality=item.modality, path=item.path, positions=len(span), details=consumed(item))
                for item, span in zip(items, routed, strict=True)
            ]
        )
    return receipts


def _prefix_groups(prefixes: list[SharedPrefix | None]) -> list[PrefixGroup]:
    """The groups a batch's reported prefixes stand for, in the order `shared_prefixes` gave them (by first row)."""
    rows: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for row, prefix in enumerate(prefixes):
        if prefix is not None:
            rows.setdefault((prefix.positions, tuple(prefix.samples)), []).append(row)
    return [PrefixGroup(tuple(members), positions) for (positions, _), members in rows.items()]


def _block_source(item: MediaInput) -> str | None:
    """What a modality block is made from, for telling blocks of the same input: the media's whole provenance (file
    content, preprocessing, frames, window, points), or None where it names no content and preprocessing."""
    if not (item.provenance.get("sha256") and item.provenance.get("preprocessing")):
        return None
    return json.dumps([item.modality, item.provenance], sort_keys=True, default=str)


def _content(item: MediaInput, index: int) -> tuple:
    """What makes two inputs encode alike: the file's content and its preprocessing (else the input itself)."""
    sha256, preprocessing = item.provenance.get("sha256"), item.provenance.get("preprocessing")
    return (sha256, preprocessing) if sha256 and preprocessing else ("input", index)


def _same_shape(indices, shape_of) -> list[list[int]]:
    """`indices` grouped by `shape_of(index)`, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index in indices:
        groups.setdefault(shape_of(index), []).append(index)
    return list(groups.values())


def load_encoder(modality: Modality, path: Path, select_layer: int, point_encoder: dict[str, int]) -> torch.nn.Module:
    """The encoder of a modality from its local weights."""
    if modality == "image":
        from mcub.models.modelcompose.encoders.clip import load_clip_image_tower

        return load_clip_image_tower(path, select_layer)
    if modality == "video":
        from mcub.models.modelcompose.encoders.languagebind_video import load_languagebind_video

        return _SelectLayer(load_languagebind_video(path), select_layer)
    if modality == "audio":
        from mcub.models.modelcompose.encoders.beats import load_beats

        return load_beats(path)
    from mcub.models.modelcompose.encoders.pointbert import PointBERTConfig, load_pointbert

    return load_pointbert(path, PointBERTConfig(**point_encoder))


class _SelectLayer(torch.nn.Module):
    """A video tower called at the checkpoint's select layer."""

    def __init__(self, tower: torch.nn.Module, select_layer: int):
        super().__init__()
        self.tower = tower
        self.select_layer = select_layer

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.tower(pixel_values, select_layer=self.select_layer)
