"""hybridllm: a reference service for hybrid LLM architectures (prompt, RAG, tuned, hybrid)."""

__version__ = "0.1.0"
