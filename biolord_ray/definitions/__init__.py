"""Definition generation (the AGCT step of BioLORD-2023): prompts from KG facts, vLLM answers
through ray.data.llm, validation, resumable Parquet shards."""
