"""VLM labelling of clips: prompts, robust parsing, model backends and the batched runner."""
