"""biolord-ray: BioLORD-2023-style biomedical embedding models from a knowledge graph, on Ray."""

__version__ = "0.1.0"
