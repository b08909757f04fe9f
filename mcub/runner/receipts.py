"""Media-consumption receipts: the runner's check that a model consumed every media input of a sample it answered,
and the per-task counts a summary shows. A sample whose media were not all consumed is an error record naming the
modality and file, never an answer."""

from __future__ import annotations

from collections.abc import Iterable

from mcub.schema import MediaConsumption, MediaReceipt, Record, Sample


def receipt_problem(sample: Sample, receipts: list[MediaReceipt] | None) -> str | None:
    """Why `receipts` do not show every media input of `sample` consumed (None: they do). Receipts follow the
    sample's media in placeholder order; a receipt of zero positions, or with its modality or file differing from the
    input's, consumed nothing of it."""
    if receipts is None:
        return "the model gave no receipt of what it consumed of the media"
    problems = []
    for index, (modality, path) in enumerate(sample.media):
        if index >= len(receipts):
            problems.append(f"{modality} input {index + 1} ({path}) has no receipt")
            continue
        receipt = receipts[index]
        if (receipt.modality, receipt.path) != (modality, path):
            problems.append(
                f"{modality} input {index + 1} ({path}): the receipt is for {receipt.modality} {receipt.path}"
            )
        elif receipt.positions == 0:
            problems.append(f"{modality} input {index + 1} ({path}) took no position in the model's input")
    extra = receipts[len(sample.media) :]
    if extra:
        problems.append(f"{len(extra)} receipt(s) for media the sample does not carry ({extra[0].modality} ...)")
    return f"media not consumed: {'; '.join(problems)}" if problems else None


def media_consumption(records: Iterable[Record]) -> dict[str, MediaConsumption]:
    """Per modality, over the posed records (those with receipts): the inputs they carry, the inputs consumed, and the
    positions taken."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        if record.receipts is None:
            continue
        carried = [entry.get("modality") for entry in record.media]
        consumed = {
            index: receipt
            for index, receipt in enumerate(record.receipts)
            if index < len(carried) and receipt.modality == carried[index] and receipt.positions != 0
        }
        for index, modality in enumerate(carried):
            count = counts.setdefault(modality, {"inputs": 0, "consumed": 0, "positions": 0})
            count["inputs"] += 1
            if index in consumed:
                count["consumed"] += 1
                count["positions"] += consumed[index].positions or 0
    return {modality: MediaConsumption(**count) for modality, count in sorted(counts.items())}
