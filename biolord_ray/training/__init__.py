"""Training stages: contrastive pairs (BioLORD-2023-C), later the Ray Train phases."""
