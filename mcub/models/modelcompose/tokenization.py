"""Vicuna token ids of a prompt, cut at its placeholders and tokenised chunk by chunk as the reference does.

The reference (`modelcompose/mm_utils.py`, `tokenizer_modal_token`, on transformers 4.31's slow `LlamaTokenizer`)
cuts the prompt at every placeholder and tokenises each text chunk in a call of its own. Each call prepends BOS and
lets SentencePiece add its dummy-prefix "▁" to the chunk; BOS is kept only at the very start, and each placeholder
becomes one marker. Hence a chunk "\\n..." after a placeholder starts with a standalone "▁" (29871 in Llama) before
the newline byte (13), the "USER: " before the first placeholder ends in a standalone "▁", and an empty chunk (two
adjacent placeholders, a placeholder at the end) adds nothing. `ChunkTokenizer` reproduces this with SentencePiece.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from mcub.errors import CheckpointError
from mcub.modalities import PLACEHOLDERS, Modality

TOKENIZER_FILE = "tokenizer.model"

PromptToken: TypeAlias = int | Modality
"""A token id, or the modality whose placeholder stands at this position (the reference's negative id)."""

# The reference also cuts at these (`constants.py`, MODAL_TOKENS), but they belong to no harness modality.
_REFERENCE_ONLY_PLACEHOLDERS = ("<text>", "<relrep>")
_MODALITY_OF_PLACEHOLDER: dict[str, Modality] = {
    placeholder: modality for modality, placeholder in PLACEHOLDERS.items()
}
_PLACEHOLDER_SPLIT = re.compile("(" + "|".join(re.escape(placeholder) for placeholder in PLACEHOLDERS.values()) + ")")


class ChunkTokenizer:
    """Vicuna's SentencePiece model (`tokenizer.model`), encoding prompts chunk-wise as the reference does."""

    def __init__(self, model_file: str | Path):
        import sentencepiece

        try:
            self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"{model_file}: not a readable SentencePiece model ({error})") from error
        self._bos_id = self._processor.bos_id()
        self._eos_id = self._processor.eos_id()
        if self._bos_id < 0 or self._eos_id < 0:
            raise CheckpointError(f"{model_file}: the SentencePiece model defines no BOS or no EOS piece")
        self._special_ids = frozenset((self._bos_id, self._eos_id, self._processor.unk_id()))
        special_pieces = [self._processor.id_to_piece(token_id) for token_id in sorted(self._special_ids)]
        self._unencodable = (*_REFERENCE_ONLY_PLACEHOLDERS, *special_pieces)

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def pad_id(self) -> int:
        """EOS, as the reference loader sets `pad_token_id = eos_token_id` (Llama has no pad piece)."""
        return self._eos_id

    def encode_prompt(self, prompt: str) -> list[PromptToken]:
        """BOS, then each text chunk's ids and each placeholder's modality, in prompt order."""
        if not prompt:
            raise ValueError("cannot encode an empty prompt")
        self._reject_unencodable(prompt)
        tokens: list[PromptToken] = [self._bos_id]
        for index, part in enumerate(_PLACEHOLDER_SPLIT.split(prompt)):
            if index % 2:
                tokens.append(_MODALITY_OF_PLACEHOLDER[part])
            else:
                tokens.extend(self._processor.encode(part))
        return tokens

    def encode_text(self, text: str) -> list[int]:
        """The ids of a continuation of a prompt ending in "ASSISTANT:", without BOS or EOS.

        The reference sees an answer inside its last chunk, "... ASSISTANT: B", where SentencePiece encodes the
        space-led word " B" as it encodes "B" alone with its dummy prefix. So the continuation is given without the
        separating space ("B", not " B") and encoded on its own.
        """
        if not text or text[0].isspace():
            raise ValueError(f"a continuation must be non-empty and start without whitespace, got {text!r}")
        self._reject_unencodable(text, *PLACEHOLDERS.values())
        return self._processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids without BOS, EOS and UNK, as the reference's `batch_decode(skip_special_tokens=True)`."""
        return self._processor.decode([token_id for token_id in ids if token_id not in self._special_ids])

    def _reject_unencodable(self, text: str, *more: str) -> None:
        for literal in (*self._unencodable, *more):
            if literal in text:
                raise ValueError(
                    f"{literal!r} at character {text.index(literal)}: the reference turns it into a special or "
                    "placeholder id, which cannot be reproduced here as text"
                )


def load_chunk_tokenizer(directory: str | Path) -> ChunkTokenizer:
    """The tokenizer of a local LLM directory in Vicuna's layout (it holds `tokenizer.model`)."""
    model_file = Path(directory) / TOKENIZER_FILE
    if not model_file.is_file():
        raise CheckpointError(f"{directory}: no {TOKENIZER_FILE} (Vicuna's SentencePiece tokenizer) in this directory")
    return ChunkTokenizer(model_file)
