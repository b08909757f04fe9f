"""A media file that the samples of a batch share is decoded and hashed once per worker per batch, with the tensors
and provenance that decoding it for every sample gives; a file changed on disk is decoded again."""

import itertools
import os
from pathlib import Path

import pytest
import torch

from mcub.media import load_media, synthetic
from mcub.runner import loading
from mcub.runner.loading import SampleDataset, load_batches
from mcub.schema import Sample

PREPROCESSING = {"image": "clip-336-pad", "video": "languagebind-224", "audio": "beats-fbank", "point": "stored"}


def _media(directory: Path) -> tuple[tuple[str, str], ...]:
    return (
        ("image", str(synthetic.write_image(directory / "i.png", 40, 30))),
        ("audio", str(synthetic.write_audio(directory / "a.wav", 0.5, 44100, 2))),
        ("video", str(synthetic.write_video(directory / "v.mp4", 12, 64, 48, 12))),
        ("point", str(synthetic.write_points(directory / "p.npy", 256))),
    )


def _samples(media, count: int) -> list[Sample]:
    prompt = "<image> <audio> <video> <point> In common?"
    return [Sample("t", str(i), prompt, media, {}, "A", {"question_index": i}) for i in range(count)]


@pytest.fixture
def decodes(monkeypatch, tmp_path):
    """Every load_media call of the loader, appended to a file (so that worker processes' calls are seen too)."""
    log = tmp_path / "decodes.log"
    log.touch()

    def counted(modality, path, *args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {modality} {path}\n")
        return load_media(modality, path, *args, **kwargs)

    monkeypatch.setattr(loading, "load_media", counted)
    return lambda: [line.split() for line in log.read_text().splitlines()]


def _assert_as_decoded_alone(batches, media):
    alone = {path: load_media(modality, path, PREPROCESSING[modality]) for modality, path in media}
    for item in (item for batch in batches for item in batch):
        assert item.error is None and [m.path for m in item.media] == [path for _, path in media]
        for decoded, (_, path) in zip(item.media, media, strict=True):
            assert decoded.provenance == alone[path].provenance
            assert decoded.tensors.keys() == alone[path].tensors.keys()
            assert all(torch.equal(t, alone[path].tensors[k]) for k, t in decoded.tensors.items())
        assert item.provenance == [{"modality": m, **alone[p].provenance} for m, p in media]


def test_a_shared_file_is_decoded_once_per_batch(tmp_path, decodes):
    media = _media(tmp_path)
    dataset = SampleDataset(_samples(media, 6), PREPROCESSING)
    batches = list(load_batches(dataset, [[0, 1, 2], [3, 4, 5]], itertools.count().__next__, 0, False, False, "t"))
    assert [[item.sample.id for item in batch] for batch in batches] == [["0", "1", "2"], ["3", "4", "5"]]
    calls = decodes()
    assert sorted(path for _, _, path in calls) == sorted(path for _, path in media for _ in range(2))
    _assert_as_decoded_alone(batches, media)
    assert dataset[0].provenance == batches[0][0].provenance and len(decodes()) == 8 + 4  # alone: no memo


def test_each_worker_decodes_a_shared_file_once_per_batch(tmp_path, decodes):
    media = _media(tmp_path)
    dataset = SampleDataset(_samples(media, 16), PREPROCESSING)
    claim = itertools.count().__next__
    batches = list(load_batches(dataset, [list(range(8)), list(range(8, 16))], claim, 2, False, False, "t"))
    calls = decodes()
    workers = {pid for pid, _, _ in calls}
    assert len(workers) == 2 and os.getpid() not in {int(pid) for pid in workers}
    # Two batches of eight, dealt out in turn to two workers: each decodes each file once for each batch.
    twice = sorted(path for _, path in media for _ in range(2))
    assert all(sorted(path for worker, _, path in calls if worker == pid) == twice for pid in workers)
    _assert_as_decoded_alone(batches, media)


def test_a_file_changed_on_disk_is_decoded_again(tmp_path, decodes):
    media = _media(tmp_path)
    image = Path(media[0][1])
    dataset = SampleDataset(_samples(media, 4), PREPROCESSING)
    decoded: loading.DecodedMedia = {}
    first = dataset.load(0, decoded)
    assert dataset.load(1, decoded).media[0] is first.media[0] and len(decodes()) == 4
    synthetic.write_image(image, 40, 30, seed=9)  # new content, same size on disk or not
    changed = dataset.load(2, decoded)
    assert len(decodes()) == 5 and decodes()[-1][2] == str(image)
    assert changed.provenance[0]["sha256"] != first.provenance[0]["sha256"]
    assert not torch.equal(changed.media[0].tensors["pixel_values"], first.media[0].tensors["pixel_values"])
    status = image.stat()
    os.utime(image, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000))  # touched only: decoded again too
    touched = dataset.load(3, decoded)
    assert len(decodes()) == 6 and touched.media[0] is not changed.media[0]
    assert torch.equal(touched.media[0].tensors["pixel_values"], changed.media[0].tensors["pixel_values"])
