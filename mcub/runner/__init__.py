"""The runner: shares a task's batches between torchrun ranks (`distributed`), decodes media in DataLoader workers
(`loading`), plans batches of similar cost (`batching`) and drives the model batch by batch (`loop`), writing one
raw record per sample. It knows no protocol's internals and scores nothing (see mcub.scorer)."""
