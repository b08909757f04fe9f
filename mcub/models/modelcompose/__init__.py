"""The ModelCompose architecture (DAMC, NaiveMC) on top of a transformers Llama."""
