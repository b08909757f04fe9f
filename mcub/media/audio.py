"""Audio: soundfile or PyAV decoding, mono, 16 kHz, the BEATs fbank of the released audio encoder, and the waveform
itself for models whose own feature extractor reads it (`waveform-16k`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mcub.errors import MediaError
from mcub.media import SignalEdit, check_file, edited

SAMPLE_RATE = 16_000
FBANK_FRAMES = 1024
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
WINDOW_SAMPLES = SAMPLE_RATE * 25 // 1000
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
PaddingMask = Literal["true", "reference"]


BEATS_SECONDS = round((FBANK_FRAMES - 1) * 0.010 + 0.025, 3)
"""The audio BEATs' 1024 fbank frames cover (25 ms windows every 10 ms): the rest of a file is never read."""
RESAMPLING_MARGIN_S = 0.1
"""Read past a window's end so that resampling gives its last samples as if the whole file had been read."""


def decode_audio(path: str, max_seconds: float | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mono float32 samples at 16 kHz: all channels averaged, then resampled with torchaudio. With `max_seconds`,
    only the start of the stream is read (that window and a resampling margin), never the rest."""
    check_file(path)
    if Path(path).suffix.lower() in SOUNDFILE_SUFFIXES:
        samples, rate, total, decoder = *_read_soundfile(path, max_seconds), "soundfile"
    else:
        samples, rate, total, decoder = *_read_pyav(path, max_seconds), "pyav"
    if samples.shape[1] == 0:
        raise MediaError(path, "the audio has zero samples")
    mono = torch.from_numpy(channel_mean(samples))
    if rate != SAMPLE_RATE:
        import torchaudio.functional

        mono = torchaudio.functional.resample(mono, rate, SAMPLE_RATE)
    provenance = {
        "decoder": decoder,
        "original_rate": rate,
        "channels": int(samples.shape[0]),
        "original_samples": total,
        "read_samples": int(samples.shape[1]),
        "rate": SAMPLE_RATE,
        "samples": int(mono.shape[0]),
        "duration_s": round(total / rate, 6),
    }
    return mono, provenance


def channel_mean(samples: np.ndarray) -> np.ndarray:
    """`samples.mean(axis=0, dtype=np.float32)` of (channels, samples) float32, bit for bit, as a column sum: numpy
    adds up to 7 values one after the other onto +0.0, as this does a whole channel at a time (fast over the
    transposed view soundfile gives, where numpy's mean runs a 2-element loop per sample); from 8 channels on numpy
    sums pairwise, so it computes the mean itself."""
    channels = samples.shape[0]
    if channels >= 8:
        return np.ascontiguousarray(samples.mean(axis=0, dtype=np.float32))
    total = np.zeros(samples.shape[1], np.float32)
    for channel in samples:
        total += channel
    total /= channels
    return total


def _samples_to_read(max_seconds: float | None, rate: int) -> int | None:
    return None if max_seconds is None else int(np.ceil(round((max_seconds + RESAMPLING_MARGIN_S) * rate, 6)))


def _read_soundfile(path: str, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    """(channels, samples) of the start of the file, its rate, and the samples the whole file holds."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as handle:
            rate, total = int(handle.samplerate), int(handle.frames)
            wanted = _samples_to_read(max_seconds, rate)
            data = handle.read(-1 if wanted is None else min(wanted, total), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise MediaError(path, f"undecodable audio ({error})") from None
    return data.T, rate, max(total, data.shape[0])


def _read_pyav(path: str, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    """(channels, samples) of the start of the stream, its rate, and the samples decoded (the stream's length when
    it was read whole, else the samples read)."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            rate, channels = int(stream.rate), stream.channels
            wanted = _samples_to_read(max_seconds, rate)
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
            chunks: list[np.ndarray] = []
            read = 0
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
                    read += chunks[-1].shape[1]
                if wanted is not None and read >= wanted:
                    break
            else:
                chunks.extend(converted.to_ndarray() for converted in resampler.resample(None))
    except av.FFmpegError as error:
        raise MediaError(path, f"undecodable audio ({error})") from None
    if not chunks:
        return np.zeros((channels, 0), np.float32), rate, 0
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if wanted is not None:
        samples = samples[:, :wanted]
    return samples, rate, samples.shape[1]


def beats_fbank(
    waveform: torch.Tensor, frames: int = FBANK_FRAMES, padding_mask: PaddingMask = "true", path: str = "<waveform>"
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The BEATs input: 128-bin Kaldi fbank (25 ms / 10 ms) of the 16 kHz waveform x 2^15, normalised, cut or
    zero-padded to `frames`. The mask is True over padding ("true"), or all False as the reference leaves it."""
    from torchaudio.compliance import kaldi

    if waveform.shape[-1] < WINDOW_SAMPLES:
        raise MediaError(path, f"{waveform.shape[-1]} samples at 16 kHz, shorter than one 25 ms fbank window")
    fbank = kaldi.fbank(
        waveform.reshape(1, -1) * 2**15,
        num_mel_bins=128,
        sample_frequency=SAMPLE_RATE,
        frame_length=25,
        frame_shift=10,
    )
    fbank = (fbank - FBANK_MEAN) / (2 * FBANK_STD)
    computed = fbank.shape[0]
    kept = min(computed, frames)
    features = torch.zeros(frames, fbank.shape[1], dtype=fbank.dtype)
    features[:kept] = fbank[:kept]
    mask = torch.zeros(frames, dtype=torch.bool)
    if padding_mask == "true":
        mask[kept:] = True
    provenance = {
        "fbank_frames": computed,
        "kept_frames": kept,
        "padded_frames": frames - kept,
        "window_s": [0.0, round((kept - 1) * 0.010 + 0.025, 3)],
        "padding_mask": padding_mask,
    }
    return features, mask, provenance


def _beats(padding_mask: PaddingMask):
    def preprocess(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        waveform, provenance = decode_audio(path, BEATS_SECONDS)
        waveform = edited(waveform, edit, path)
        fbank, mask, window = beats_fbank(waveform, padding_mask=padding_mask, path=path)
        return {"fbank": fbank, "padding_mask": mask}, {**provenance, **window}

    return preprocess


def _waveform_16k(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    waveform, provenance = decode_audio(path)
    waveform = edited(waveform, edit, path)
    return {"waveform": waveform}, provenance


READ_SECONDS = {"beats-fbank": BEATS_SECONDS, "beats-fbank-reference-mask": BEATS_SECONDS}
"""The seconds a preprocessing reads from the start of a file (the others read it whole)."""

PREPROCESSING = {
    "beats-fbank": _beats("true"),
    "beats-fbank-reference-mask": _beats("reference"),
    "waveform-16k": _waveform_16k,
}
