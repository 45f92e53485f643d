"""Training: the intent router (LoRA on MiniLM), the generator adapter, and their data builders."""
