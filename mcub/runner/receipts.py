"""Media-consumption receipts: the runner's check that a model consumed every media input of a sample it answered,
and the per-task counts a summary shows. A sample whose media were not all consumed is an error record naming the
modality and file, never an answer."""

from __future__ import annotations

from collections.abc import Iterable

from mcub.schema import MediaConsumption, MediaReceipt, Record, Sample


def receipt_problem(sample: Sample, receipts: list[MediaReceipt] | None) -> str | None:
    """Why `receipts` do not show every media input of `sample` consumed (None: they do). Receipts follow the
    sample's media in placeholder order; an input without its receipt in that order, or whose receipt shows zero
    positions, was not consumed."""
    if receipts is None:
        return "the model gave no receipt of what it consumed of the media" if sample.media else None
    matched, unmatched = align(list(sample.media), receipts)
    problems = []
    for index, ((modality, path), receipt) in enumerate(zip(sample.media, matched, strict=True)):
        if receipt is None:
            problems.append(f"{modality} input {index + 1} ({path}) has no receipt")
        elif receipt.positions == 0:
            problems.append(f"{modality} input {index + 1} ({path}) took no position in the model's input")
    if unmatched:
        listed = ", ".join(f"{receipt.modality} {receipt.path}" for receipt in unmatched)
        problems.append(f"receipt(s) out of placeholder order or for media the sample does not carry: {listed}")
    return f"media not consumed: {'; '.join(problems)}" if problems else None


def align(
    media: list[tuple[str | None, str | None]], receipts: list[MediaReceipt]
) -> tuple[list[MediaReceipt | None], list[MediaReceipt]]:
    """Each media input's receipt (None where the next receipt is not for it), and the receipts left unmatched."""
    matched: list[MediaReceipt | None] = []
    used: list[int] = []
    for modality, path in media:
        position = used[-1] + 1 if used else 0
        found = position < len(receipts) and (receipts[position].modality, receipts[position].path) == (modality, path)
        matched.append(receipts[position] if found else None)
        used += [position] if found else []
    return matched, [receipt for index, receipt in enumerate(receipts) if index not in used]


def media_consumption(records: Iterable[Record]) -> dict[str, MediaConsumption]:
    """Per modality, over the posed records (those the model was given a prompt for): the inputs they carry, the
    inputs their receipts show consumed (none for a model that reads no media), and the positions taken."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        if record.prompt_sha256 is None:
            continue
        carried = [(entry.get("modality"), entry.get("path")) for entry in record.media]
        matched, _ = align(carried, record.receipts or [])
        for (modality, _path), receipt in zip(carried, matched, strict=True):
            count = counts.setdefault(modality, {"inputs": 0, "consumed": 0, "positions": 0})
            count["inputs"] += 1
            if receipt is not None and receipt.positions != 0:
                count["consumed"] += 1
                count["positions"] += receipt.positions or 0
    return {modality: MediaConsumption(**count) for modality, count in sorted(counts.items())}
