"""Model adapters: the Model interface, the registry of models/*.yaml, baselines and ModelCompose."""
