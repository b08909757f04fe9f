"""The input conditions: `drop:M` (M's placeholders and inputs removed), `blank:M` (a neutral input of the same
shape), `swap:M` (another sample's M input, by a seeded derangement), `shuffle-order` (the inputs permuted with their
placeholders), `noise:audio=SNR_DB` (seeded Gaussian noise at that SNR). The rules are in README.md ("Run
conditions")."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcub.conditions import Condition, ConditionError, media_edits, record_step, register_condition
from mcub.hashing import derived_seed
from mcub.modalities import MODALITIES, PLACEHOLDERS, Modality
from mcub.prompts import placeholder_parts
from mcub.schema import Sample

if TYPE_CHECKING:
    from mcub.tasks import TaskSpec


def _modality(argument: str | None, kind: str) -> Modality:
    if argument not in MODALITIES:
        raise ValueError(f"{kind} takes a modality ({', '.join(MODALITIES)}), not {argument!r}")
    return argument


def _modality_refusal(task: TaskSpec, samples: list[Sample], modality: Modality) -> str | None:
    if modality not in task.modalities:
        return f"task {task.name} has no {modality} input"
    if not any(m == modality for sample in samples if sample.error is None for m, _ in sample.media):
        return f"no sample of task {task.name} has any {modality} input left"
    return None


def remove_placeholders(prompt: str, modality: Modality) -> str:
    """The prompt without `modality`'s placeholders: a line that holds nothing but such placeholders (and spaces)
    goes with its line break; elsewhere a placeholder goes with the spaces after it, or, at the end of a line,
    with the spaces before it. Every other character is kept."""
    token = re.escape(PLACEHOLDERS[modality])
    only = re.compile(rf"[ \t]*(?:{token}[ \t]*)+")
    kept = []
    for line in prompt.split("\n"):
        if line and only.fullmatch(line):
            continue
        kept.append(re.sub(rf"[ \t]*{token}[ \t]*$|{token}[ \t]*", "", line))
    return "\n".join(kept)


class Drop(Condition):
    """`drop:M`: M's placeholders and inputs removed, the prompt otherwise unchanged (see `remove_placeholders`)."""

    def __init__(self, modality: Modality):
        self.modality = modality
        self.spec = f"drop:{modality}"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        return _modality_refusal(task, samples, self.modality)

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        return [self._dropped(sample) if sample.error is None else sample for sample in samples]

    def _dropped(self, sample: Sample) -> Sample:
        kept = [index for index, (modality, _) in enumerate(sample.media) if modality != self.modality]
        removed = [path for modality, path in sample.media if modality == self.modality]
        edits = media_edits(sample)
        return record_step(
            sample,
            self.spec,
            {"removed": removed},
            prompt=remove_placeholders(sample.prompt, self.modality),
            media=tuple(sample.media[index] for index in kept),
            edits=[edits[index] for index in kept],
        )


@register_condition("drop")
def _drop(argument: str | None) -> Condition:
    return Drop(_modality(argument, "drop"))


def _edited_inputs(sample: Sample, modality: Modality, step: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The sample's media edits with `step` added to each of its `modality` inputs."""
    edits = media_edits(sample)
    return [steps + [step] if m == modality else steps for (m, _), steps in zip(sample.media, edits, strict=True)]


class Blank(Condition):
    """`blank:M`: each M input replaced, after decoding, by a neutral one of the same shape (see `BlankSignal`)."""

    edits_decoded_media = True

    def __init__(self, modality: Modality):
        self.modality = modality
        self.spec = f"blank:{modality}"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        return _modality_refusal(task, samples, self.modality)

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        return [self._blanked(sample) for sample in samples]

    def _blanked(self, sample: Sample) -> Sample:
        if sample.error is not None or all(m != self.modality for m, _ in sample.media):
            return sample
        edits = _edited_inputs(sample, self.modality, {"edit": "blank"})
        return record_step(sample, self.spec, {"rule": BLANK_RULES[self.modality]}, edits=edits)


@register_condition("blank")
def _blank(argument: str | None) -> Condition:
    return Blank(_modality(argument, "blank"))


class Swap(Condition):
    """`swap:M`: each sample's M input is another sample's, by a seeded derangement that never gives a sample its
    own M file (see `swap_donors`)."""

    def __init__(self, modality: Modality):
        self.modality = modality
        self.spec = f"swap:{modality}"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        reason = _modality_refusal(task, samples, self.modality)
        if reason is not None:
            return reason
        carrying = [sample for sample in samples if sample.error is None and self._files(sample)]
        several = [sample for sample in carrying if len(self._files(sample)) > 1]
        if several:
            count = len(self._files(several[0]))
            return f"sample {several[0].id} has {count} {self.modality} inputs; swap takes samples with one"
        if len(carrying) < 2:
            return f"task {task.name} has {len(carrying)} sample with a {self.modality} input; swap needs two"
        shared, count = Counter(self._files(sample)[0] for sample in carrying).most_common(1)[0]
        if 2 * count > len(carrying):
            return (
                f"{count} of its {len(carrying)} samples share the {self.modality} file {shared}: no derangement "
                "gives every sample another file"
            )
        return None

    def _files(self, sample: Sample) -> list[str]:
        return [path for modality, path in sample.media if modality == self.modality]

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        carrying = [index for index, sample in enumerate(samples) if sample.error is None and self._files(sample)]
        if not carrying:
            return samples
        draw_seed = derived_seed(seed, self.spec, samples[carrying[0]].task)
        donors = swap_donors([self._files(samples[index])[0] for index in carrying], draw_seed)
        swapped = list(samples)
        for position, index in enumerate(carrying):
            sample, donor = samples[index], samples[carrying[donors[position]]]
            new_path = self._files(donor)[0]
            media = tuple((m, new_path if m == self.modality else p) for m, p in sample.media)
            details = {"donor": donor.id, "file": new_path, "seed": draw_seed}
            swapped[index] = record_step(sample, self.spec, details, media=media)
        return swapped


def swap_donors(files: list[str], seed: int) -> list[int]:
    """For each position, the position whose file it takes: never one with the same file (so never itself). The
    positions are shuffled (seeded), grouped by file in a shuffled order of files, and each takes the file of the
    position `m` places further round the circle, `m` being the largest group's size: no group reaches itself when
    no file is shared by more than half of the positions (checked by the caller)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    order = [int(index) for index in rng.permutation(len(files))]
    distinct = list(dict.fromkeys(files[index] for index in order))
    rank = {file: int(place) for file, place in zip(distinct, rng.permutation(len(distinct)), strict=True)}
    order.sort(key=lambda index: rank[files[index]])
    shift = max(Counter(files).values())
    donors = [0] * len(files)
    for place, index in enumerate(order):
        donors[index] = order[(place + shift) % len(order)]
    return donors


@register_condition("swap")
def _swap(argument: str | None) -> Condition:
    return Swap(_modality(argument, "swap"))


class ShuffleOrder(Condition):
    """`shuffle-order`: each sample's inputs permuted with their placeholders, by a seeded permutation other than
    the identity (seeded per sample from the run seed, task and sample id); the prompt's text is kept, slot `k`
    holding the placeholder of the input now at position `k`."""

    spec = "shuffle-order"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        if not any(len(sample.media) > 1 for sample in samples if sample.error is None):
            return f"no sample of task {task.name} has two inputs to reorder"
        return None

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        return [self._shuffled(sample, seed) if sample.error is None and len(sample.media) > 1 else sample
                for sample in samples]  # fmt: skip

    def _shuffled(self, sample: Sample, seed: int) -> Sample:
        import numpy as np

        sample_seed = derived_seed(seed, self.spec, sample.task, sample.id)
        rng = np.random.default_rng(sample_seed)
        identity = list(range(len(sample.media)))
        order = identity
        while order == identity:
            order = [int(index) for index in rng.permutation(len(sample.media))]
        texts, modalities = placeholder_parts(sample.prompt)
        if modalities != [modality for modality, _ in sample.media]:
            raise ConditionError(f"{self.spec}: sample {sample.id}'s placeholders do not follow its media")
        media = tuple(sample.media[index] for index in order)
        prompt = texts[0] + "".join(PLACEHOLDERS[m] + text for (m, _), text in zip(media, texts[1:], strict=True))
        edits = media_edits(sample)
        return record_step(sample, self.spec, {"permutation": order, "seed": sample_seed}, prompt=prompt,
                           media=media, edits=[edits[index] for index in order])  # fmt: skip


@register_condition("shuffle-order")
def _shuffle_order(argument: str | None) -> Condition:
    if argument is not None:
        raise ValueError("shuffle-order takes no argument")
    return ShuffleOrder()


class Noise(Condition):
    """`noise:audio=SNR_DB`: seeded white Gaussian noise added to each decoded audio input at that signal-to-noise
    ratio, relative to the power of the decoded samples (see `NoiseSignal`); seeded per sample and input."""

    edits_decoded_media = True

    def __init__(self, snr_db: float):
        self.snr_db = snr_db
        self.spec = f"noise:audio={snr_db:g}"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        return _modality_refusal(task, samples, "audio")

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        return [self._noised(sample, seed) if sample.error is None else sample for sample in samples]

    def _noised(self, sample: Sample, seed: int) -> Sample:
        edits, seeds = media_edits(sample), []
        for index, (modality, _) in enumerate(sample.media):
            if modality == "audio":
                seeds.append(derived_seed(seed, self.spec, sample.task, sample.id, str(index)))
                edits[index] = [*edits[index], {"edit": "noise", "snr_db": self.snr_db, "seed": seeds[-1]}]
        if not seeds:
            return sample
        return record_step(sample, self.spec, {"snr_db": self.snr_db, "seeds": seeds}, edits=edits)


@register_condition("noise")
def _noise(argument: str | None) -> Condition:
    modality, equals, value = (argument or "").partition("=")
    if modality != "audio":
        raise ValueError(f"noise is defined for audio only (noise:audio=SNR_DB), not {argument!r}")
    try:
        snr_db = float(value) if equals else math.nan
    except ValueError:
        snr_db = math.nan
    if not math.isfinite(snr_db):
        raise ValueError(f"noise:audio takes a finite signal-to-noise ratio in dB (noise:audio=10), not {value!r}")
    return Noise(snr_db)


# --- the edits of decoded media (applied in the runner's workers, see mcub.media.SignalEdit) ----------------------

BLANK_RULES: dict[Modality, str] = {
    "image": "every pixel the image's mean colour (per channel, rounded), same size",
    "video": "every frame black (0), same frames and size",
    "audio": "silence (0), same samples and rate",
    "point": "every point at the origin with colour 0, same count",
}


def blank_signal(modality: Modality, signal: Any) -> Any:
    """The neutral signal of the same shape as a decoded one (BLANK_RULES)."""
    import numpy as np

    if modality == "image":
        from PIL import Image

        mean = np.asarray(signal, dtype=np.float64).reshape(-1, 3).mean(axis=0)
        return Image.new("RGB", signal.size, tuple(int(math.floor(channel + 0.5)) for channel in mean))
    if modality == "audio":
        return signal.new_zeros(signal.shape)
    return np.zeros_like(signal)


def noisy_signal(waveform: Any, snr_db: float, seed: int) -> tuple[Any, float]:
    """The waveform plus white Gaussian noise (numpy's generator seeded with `seed`) of power P / 10^(snr_db / 10),
    P the mean square of the waveform; and P. A ValueError for a waveform of zero power (no SNR is defined)."""
    import numpy as np
    import torch

    samples = waveform.numpy().astype(np.float64)
    power = float(np.mean(samples**2))
    if power == 0.0:
        raise ValueError("the decoded audio is silent: no signal-to-noise ratio is defined")
    scale = math.sqrt(power / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).standard_normal(samples.shape[0]) * scale
    return torch.from_numpy((samples + noise).astype(np.float32)), power


@dataclass
class _EditChain:
    """The edits of one decoded input, applied in order (a mcub.media.SignalEdit)."""

    modality: Modality
    steps: list[dict[str, Any]]
    key: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = "+".join(_step_key(step) for step in self.steps)
        self.provenance = {"condition": "+".join(step["edit"] for step in self.steps)}

    def __call__(self, signal: Any) -> Any:
        for step in self.steps:
            if step["edit"] == "blank":
                signal = blank_signal(self.modality, signal)
                self.provenance["blank_rule"] = BLANK_RULES[self.modality]
            else:
                signal, power = noisy_signal(signal, step["snr_db"], step["seed"])
                self.provenance |= {"snr_db": step["snr_db"], "noise_seed": step["seed"],
                                    "signal_power": round(power, 9)}  # fmt: skip
        return signal


def _step_key(step: dict[str, Any]) -> str:
    if step["edit"] == "noise":
        return f"noise:{step['snr_db']:g}:{step['seed']}"
    return step["edit"]


def signal_edit(modality: Modality, steps: list[dict[str, Any]]) -> _EditChain | None:
    """The edit of one decoded input from its steps in `meta["condition"]["edits"]` (None: no steps)."""
    return _EditChain(modality, steps) if steps else None
