"""The arguments of the Qwen2.5-Omni adapter (`qwen-omni`). Importable without torch."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from mcub.modalities import Modality
from mcub.models.arguments import AdapterArguments

# qwen-omni-utils' defaults (qwen_omni_utils/v2_5/vision_process.py): MIN_PIXELS, MAX_PIXELS for images,
# VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS for each video frame (also Qwen2_5OmniProcessor's own video size).
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 16384 * 28 * 28
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28


class QwenOmniArguments(AdapterArguments):
    """`pretrained`: a Qwen2.5-Omni checkpoint (hub id or local directory) whose thinker answers in text (the talker
    is never loaded). `use_audio_in_video`: a video also brings its own audio track, interleaved with its frames
    as the model was trained (the same value goes to the processor and the model). The pixel limits bound the size
    the processor resizes each image and video frame to (a multiple of 28 on each side). Video frames are sampled in
    the media workers by the `qwen-omni-2fps` preprocessing at qwen-omni-utils' defaults (2 fps, 4 to 768 frames,
    an even count), recorded in each record's provenance. `system_prompt`: None is the model's documented one."""

    builder: ClassVar[str] = "mcub.models.qwen_omni.model:QwenOmniModel"
    cuda_dtype: ClassVar[str] = "bfloat16"

    pretrained: str
    use_audio_in_video: bool = False
    image_min_pixels: int = Field(default=IMAGE_MIN_PIXELS, gt=0)
    image_max_pixels: int = Field(default=IMAGE_MAX_PIXELS, gt=0)
    video_min_pixels: int = Field(default=VIDEO_MIN_PIXELS, gt=0)
    video_max_pixels: int = Field(default=VIDEO_MAX_PIXELS, gt=0)
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _ordered_limits(self) -> QwenOmniArguments:
        for kind in ("image", "video"):
            low, high = getattr(self, f"{kind}_min_pixels"), getattr(self, f"{kind}_max_pixels")
            if low > high:
                raise ValueError(f"{kind}_min_pixels ({low}) is above {kind}_max_pixels ({high})")
        return self

    def input_modalities(self) -> tuple[Modality, ...]:
        return ("image", "video", "audio")

    def components(self) -> list[str]:
        return [f"pretrained={self.pretrained}"]
