"""Questions: the sources (IFBench, JSONL, Hugging Face datasets, composed) and their criteria."""
