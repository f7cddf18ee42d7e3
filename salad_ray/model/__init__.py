"""The student model: frozen speech encoder -> adapter -> causal LLM."""
