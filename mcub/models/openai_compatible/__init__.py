"""The `openai-compatible` adapter: any server of the OpenAI chat-completions API (vLLM, SGLang, vLLM-Omni, ...)
answers the questions; the harness sends each sample's media as content parts and records what it sent."""
