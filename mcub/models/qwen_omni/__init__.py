"""The Qwen2.5-Omni adapter: the thinker (text answers) of a Qwen2.5-Omni checkpoint with its own processor."""
