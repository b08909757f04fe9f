"""Chat-completions request bodies: one user message whose content parts follow a sample's placeholders (text
between them as `text` parts; images and videos as base64 data URLs, audio as `input_audio`), the decoding fields,
and the exact bytes sent."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcub.errors import MediaError, UnsupportedInput
from mcub.modalities import Modality
from mcub.prompts import placeholder_parts
from mcub.schema import Sample

AUDIO_AS_IS = {".wav": ("wav", "audio/wav"), ".mp3": ("mp3", "audio/mpeg")}
"""Audio containers `input_audio` takes as they are; any other is decoded to 16 kHz mono and sent as WAV."""


@dataclass(frozen=True)
class EncodedMedia:
    """One media file as a content part, and what was sent of it (for its receipt)."""

    modality: Modality
    path: str
    part: dict[str, Any]
    details: dict[str, Any]


def encode_media(modality: Modality, path: str) -> EncodedMedia:
    """The content part of a file: its own bytes (image, video, wav or mp3 audio), or other audio decoded by
    `mcub.media.audio.decode_audio` (16 kHz mono) and written as 16-bit WAV."""
    if modality == "audio":
        return _encode_audio(path)
    if modality not in ("image", "video"):
        raise UnsupportedInput(f"{path}: a {modality} input cannot be sent in a chat-completions request")
    mime = mimetypes.guess_type(path)[0]
    if mime is None or not mime.startswith(f"{modality}/"):
        raise MediaError(path, f"its {modality} type cannot be told from the suffix (a data URL needs a MIME type)")
    data = Path(path).read_bytes()
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    key = "image_url" if modality == "image" else "video_url"
    return EncodedMedia(modality, path, {"type": key, key: {"url": url}}, _sent("file-bytes", data, mime))


def _encode_audio(path: str) -> EncodedMedia:
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_AS_IS:
        audio_format, mime = AUDIO_AS_IS[suffix]
        data = Path(path).read_bytes()
        details = _sent("file-bytes", data, mime)
    else:
        import soundfile

        from mcub.media.audio import SAMPLE_RATE, decode_audio

        samples, provenance = decode_audio(path)
        buffer = io.BytesIO()
        soundfile.write(buffer, samples.numpy(), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        audio_format, data = "wav", buffer.getvalue()
        details = _sent("wav-16k", data, "audio/wav") | {"decoded": provenance}
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": audio_format}}
    return EncodedMedia("audio", path, part, details)


def _sent(kind: str, data: bytes, mime: str) -> dict[str, Any]:
    return {"sent": kind, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mime": mime}


def chat_messages(sample: Sample, media: list[EncodedMedia], system_prompt: str | None) -> list[dict[str, Any]]:
    """The system message (when given) and the user message: text parts and media parts in placeholder order."""
    content: list[dict[str, Any]] = []
    texts, placed = placeholder_parts(sample.prompt)
    if placed != [item.modality for item in media]:
        raise UnsupportedInput(
            f"sample {sample.id}: placeholders {'+'.join(placed) or 'none'} but media "
            f"{'+'.join(item.modality for item in media) or 'none'}"
        )
    for index, text in enumerate(texts):
        if text:
            content.append({"type": "text", "text": text})
        if index < len(media):
            content.append(media[index].part)
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*system, {"role": "user", "content": content}]


def generation_body(model: str, messages: list[dict[str, Any]], max_tokens: int, seed: int) -> dict[str, Any]:
    """Greedy text: temperature 0, one choice, the run's token limit."""
    return {"model": model, "messages": messages, "temperature": 0, "seed": seed, "max_tokens": max_tokens, "n": 1}


def prompt_logprobs_body(
    model: str, messages: list[dict[str, Any]], seed: int, continuation: str | None
) -> dict[str, Any]:
    """The prompt's log-probabilities (vLLM's `prompt_logprobs`: 0 gives the prompt token's alone at each position);
    with a `continuation`, it is the start of the assistant's answer (`continue_final_message`), else the prompt
    ends where generation would start (`add_generation_prompt`). One token is generated, and ignored."""
    if continuation is None:
        return {**generation_body(model, messages, 1, seed), "prompt_logprobs": 0}
    answer = {"role": "assistant", "content": continuation}
    return {
        **generation_body(model, [*messages, answer], 1, seed),
        "prompt_logprobs": 0,
        "add_generation_prompt": False,
        "continue_final_message": True,
    }


def body_bytes(body: dict[str, Any]) -> bytes:
    """The exact bytes of a request body (compact JSON, UTF-8)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def rendered_prompt(messages: list[dict[str, Any]], media: list[EncodedMedia]) -> str:
    """The messages as text with each media part's data replaced by the sha256 of its bytes (the record's
    `prompt_sha256` is of this)."""
    parts = {id(item.part): item for item in media}
    shown = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": part["type"], "sha256": parts[id(part)].details["sha256"]} if id(part) in parts else part
                for part in content
            ]
        shown.append({**message, "content": content})
    return json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
