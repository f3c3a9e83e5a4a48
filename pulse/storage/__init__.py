"""What PULSE writes to disk and reads back: checkpoints (safetensors + recipe), run directories and their files,
training state, and Hugging Face export directories (read and written without importing Transformers)."""
