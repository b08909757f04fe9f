"""Audio: soundfile or PyAV decoding, mono, 16 kHz, the BEATs fbank of the released audio encoder, and the waveform
itself for models whose own feature extractor reads it (`waveform-16k`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mcub.errors import MediaError
from mcub.media import check_file

SAMPLE_RATE = 16_000
FBANK_FRAMES = 1024
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
WINDOW_SAMPLES = SAMPLE_RATE * 25 // 1000
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
PaddingMask = Literal["true", "reference"]


def decode_audio(path: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mono float32 samples at 16 kHz: all channels averaged, then resampled with torchaudio."""
    check_file(path)
    if Path(path).suffix.lower() in SOUNDFILE_SUFFIXES:
        samples, rate, decoder = *_read_soundfile(path), "soundfile"
    else:
        samples, rate, decoder = *_read_pyav(path), "pyav"
    if samples.shape[1] == 0:
        raise MediaError(path, "the audio has zero samples")
    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=0, dtype=np.float32)))
    if rate != SAMPLE_RATE:
        import torchaudio.functional

        mono = torchaudio.functional.resample(mono, rate, SAMPLE_RATE)
    provenance = {
        "decoder": decoder,
        "original_rate": rate,
        "channels": int(samples.shape[0]),
        "original_samples": int(samples.shape[1]),
        "rate": SAMPLE_RATE,
        "samples": int(mono.shape[0]),
        "duration_s": round(samples.shape[1] / rate, 6),
    }
    return mono, provenance


def _read_soundfile(path: str) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise MediaError(path, f"undecodable audio ({error})") from None
    return data.T, int(rate)


def _read_pyav(path: str) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(converted.to_ndarray() for converted in resampler.resample(frame))
            chunks.extend(converted.to_ndarray() for converted in resampler.resample(None))
            rate = int(stream.rate)
            channels = stream.channels
    except av.FFmpegError as error:
        raise MediaError(path, f"undecodable audio ({error})") from None
    if not chunks:
        return np.zeros((channels, 0), np.float32), rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


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
    def preprocess(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        waveform, provenance = decode_audio(path)
        fbank, mask, window = beats_fbank(waveform, padding_mask=padding_mask, path=path)
        return {"fbank": fbank, "padding_mask": mask}, {**provenance, **window}

    return preprocess


def _waveform_16k(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    waveform, provenance = decode_audio(path)
    return {"waveform": waveform}, provenance


PREPROCESSING = {
    "beats-fbank": _beats("true"),
    "beats-fbank-reference-mask": _beats("reference"),
    "waveform-16k": _waveform_16k,
}
