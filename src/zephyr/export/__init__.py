"""Export stage: a Zephyr model -> GGUF (llama.cpp, Ollama, LM Studio) through llama.cpp's own tools."""
