"""Chunk-wise prompt tokenisation, checked token for token against a tiny Llama-like SentencePiece model."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece

from mcub.errors import CheckpointError
from mcub.models.modelcompose.tiny import train_llama_like_tokenizer
from mcub.models.modelcompose.tokenization import TOKENIZER_FILE, ChunkTokenizer, load_chunk_tokenizer
from mcub.prompts import VICUNA_V1_SYSTEM, vicuna_v1

# No newline in the training text, so "\n" is encoded by byte fallback, as in Llama (<0x0A>, id 13).
_TRAINING_TEXT = [
    VICUNA_V1_SYSTEM,
    "USER: image: audio: video: point: Which attribute do the inputs share? ASSISTANT: B",
    "A. a dog barking B. rain on a roof C. a piano melody D. a car engine",
    "Answer with the option's letter from the given choices directly. There are 3 clips and 12 frames.",
    "The quick brown fox jumps over the lazy dog near the old red barn.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a Llama-like tokenizer.model: BPE, byte fallback, dummy prefix, BOS 1, EOS 2, UNK 0."""
    directory = tmp_path_factory.mktemp("vicuna")
    train_llama_like_tokenizer(directory, _TRAINING_TEXT * 20)
    return directory


@pytest.fixture(scope="module")
def sp(model_dir: Path) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(model_dir / TOKENIZER_FILE))


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> ChunkTokenizer:
    return load_chunk_tokenizer(model_dir)


def _expected(sp: sentencepiece.SentencePieceProcessor, *parts: str) -> list[int | str]:
    """The reference's ids, built here by hand: BOS, then each chunk encoded alone; "@m" parts are markers."""
    tokens: list[int | str] = [1]
    for part in parts:
        tokens.extend([part[1:]] if part.startswith("@") else sp.encode(part))
    return tokens


def test_special_ids(tokenizer: ChunkTokenizer) -> None:
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 2)


def test_chunk_rule(tokenizer: ChunkTokenizer, sp: sentencepiece.SentencePieceProcessor) -> None:
    space, newline = sp.piece_to_id("▁"), sp.piece_to_id("<0x0A>")
    tokens = tokenizer.encode_prompt("Hi USER: <image>\nWhich dog?")

    assert tokens == _expected(sp, "Hi USER: ", "@image", "\nWhich dog?")
    marker = tokens.index("image")
    assert tokens[marker - 1] == space
    assert tokens[marker + 1 : marker + 3] == [space, newline]
    assert tokens.count(1) == 1 and tokens[0] == 1


def test_mcub_prompt_with_four_placeholders(
    tokenizer: ChunkTokenizer, sp: sentencepiece.SentencePieceProcessor
) -> None:
    human = (
        "image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n"
        "Which attribute do the inputs share?\nA. a dog barking\nB. rain on a roof\nC. a piano melody\nD. a car engine"
    )
    question = human.split("<point>")[1]
    tokens = tokenizer.encode_prompt(vicuna_v1(human))

    assert tokens == _expected(
        sp,
        f"{VICUNA_V1_SYSTEM} USER: image: ",
        "@image",
        "\naudio: ",
        "@audio",
        "\nvideo: ",
        "@video",
        "\npoint: ",
        "@point",
        f"{question} ASSISTANT:",
    )
    assert [token for token in tokens if isinstance(token, str)] == ["image", "audio", "video", "point"]
    space, newline = sp.piece_to_id("▁"), sp.piece_to_id("<0x0A>")
    for modality in ("image", "audio", "video", "point"):
        marker = tokens.index(modality)
        assert tokens[marker - 1] == space and tokens[marker + 1 : marker + 3] == [space, newline]


def test_adjacent_placeholders_and_placeholder_at_the_edges(
    tokenizer: ChunkTokenizer, sp: sentencepiece.SentencePieceProcessor
) -> None:
    assert sp.encode("") == []  # an empty chunk is BOS alone in the reference, and BOS is stripped after the start
    assert tokenizer.encode_prompt("Look: <image><video> now <audio>") == _expected(
        sp, "Look: ", "@image", "@video", " now ", "@audio"
    )
    assert tokenizer.encode_prompt("<point>") == [1, "point"]
    assert tokenizer.encode_prompt("<image>\nDog?") == [1, "image", *sp.encode("\nDog?")]


def test_text_only_prompt_is_one_chunk(tokenizer: ChunkTokenizer, sp: sentencepiece.SentencePieceProcessor) -> None:
    prompt = vicuna_v1("Which dog?")
    assert tokenizer.encode_prompt(prompt) == [1, *sp.encode(prompt)]


def test_continuation_matches_answer_in_context(
    tokenizer: ChunkTokenizer, sp: sentencepiece.SentencePieceProcessor
) -> None:
    prompt = vicuna_v1("<audio>\nWhich one?\nA. rain\nB. a dog")
    for answer in ("B", "a dog barking"):
        assert tokenizer.encode_prompt(prompt) + tokenizer.encode_text(answer) == tokenizer.encode_prompt(
            f"{prompt} {answer}"
        )
    assert [sp.id_to_piece(token) for token in tokenizer.encode_text("B")] == ["▁B"]


@pytest.mark.parametrize("text", ["", " B", "\nB", "<image>"])
def test_continuation_rejects_leading_space_and_placeholders(tokenizer: ChunkTokenizer, text: str) -> None:
    with pytest.raises(ValueError):
        tokenizer.encode_text(text)


@pytest.mark.parametrize("literal", ["<text>", "<relrep>", "<s>", "</s>", "<unk>"])
def test_prompt_rejects_literals_the_reference_does_not_tokenise_as_text(
    tokenizer: ChunkTokenizer, literal: str
) -> None:
    with pytest.raises(ValueError, match=f"{literal!r} at character 4"):
        tokenizer.encode_prompt(f"Say {literal} <image>")


def test_decode_skips_special_ids(tokenizer: ChunkTokenizer, sp: sentencepiece.SentencePieceProcessor) -> None:
    assert tokenizer.decode([1, *sp.encode("B. rain\non a roof"), 2]) == "B. rain\non a roof"
    assert tokenizer.decode([*tokenizer.encode_text("B"), 0, 2]) == "B"
    assert tokenizer.decode([2]) == ""


def test_the_first_character_is_whole_only_once_its_last_byte_piece_is_decoded(tokenizer: ChunkTokenizer) -> None:
    from mcub.models.base import first_character_complete

    ids = tokenizer.encode_text("é B")  # "▁", then é by byte fallback: <0xC3> <0xA9>
    prefixes = [tokenizer.decode(ids[:end]) for end in range(len(ids) + 1)]
    assert prefixes[:4] == ["", "", "\ufffd", "é"]
    assert [first_character_complete(text) for text in prefixes] == [False, False, False, True, True]
    assert first_character_complete("  B") and not first_character_complete(" \ufffd")


def test_missing_tokenizer_model_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_chunk_tokenizer(tmp_path)


def test_unreadable_tokenizer_model_names_the_file(tmp_path: Path) -> None:
    model_file = tmp_path / TOKENIZER_FILE
    model_file.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=str(model_file)):
        load_chunk_tokenizer(tmp_path)
