"""Exports of a finished run into the formats other tools read: Every Eval Ever files (`eee`) and the eval results
of a Hugging Face model card (`hub_results`). Each export reads the run directory only, never the model."""
