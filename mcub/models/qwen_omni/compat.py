"""The calls that differ between the transformers versions the adapter runs on (pyproject: 5.17 to 5.24), each chosen
here by a feature of the loaded processor or thinker, nowhere else.

- A video's own audio track. In 5.24 the processor (on `OmniModalProcessorMixin`) takes `load_audio_from_video` and
  `audio_from_video_indices`: per audio slot, the video it is the track of (None: a standalone audio); its
  `use_audio_in_video` is deprecated there, to go in 5.25. In 5.17 it takes `use_audio_in_video` and gives each
  video the next audio slot in the prompt's placeholder order, the order the adapter lays the audio out in anyway:
  both tokenise the same prompt from the same audio.
- The thinker's key-value cache: `cache` (forward argument and output field) in 5.24, where `past_key_values` is
  deprecated; `past_key_values` in 5.17.

The rest the adapter calls is common to both: the video processor's `size`, `do_sample_frames` and
`cap_pixels_per_frame` (Qwen2VLVideoProcessor, the same per-frame pixel cap in both), the thinker's forward with its
media inputs, `get_rope_index` and `generate`; the media tokens' ids come from the tokenizer (5.17's processor has
no `image_token_id`)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TransformersCalls:
    """How this transformers spells the calls that differ (see the module docstring)."""

    audio_sources: bool
    """The processor takes `load_audio_from_video` and `audio_from_video_indices` (5.24), not `use_audio_in_video`."""
    cache: str
    """The thinker's key-value cache argument and output field: `cache` (5.24) or `past_key_values` (5.17)."""

    @classmethod
    def of(cls, processor: Any, thinker: Any) -> TransformersCalls:
        kwargs = processor.valid_processor_kwargs
        audio_sources = "load_audio_from_video" in kwargs.__required_keys__ | kwargs.__optional_keys__
        cache = "cache" if "cache" in inspect.signature(thinker.forward).parameters else "past_key_values"
        return cls(audio_sources=audio_sources, cache=cache)

    def audio_in_video(self, use_audio_in_video: bool, audio_sources: list[int | None]) -> dict[str, Any]:
        """The processor's arguments for whether each video brings its own audio track, and which audio is whose."""
        if not self.audio_sources:
            return {"use_audio_in_video": use_audio_in_video}
        return {
            "load_audio_from_video": use_audio_in_video,
            "audio_from_video_indices": audio_sources if use_audio_in_video else None,
        }
