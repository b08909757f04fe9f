"""The modality encoders of the released ModelCompose checkpoints, key-compatible with the original weights."""
