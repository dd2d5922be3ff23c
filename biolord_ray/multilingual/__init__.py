"""Cross-lingual distillation (BioLORD-2023-M): ``parallel`` builds the parallel text and the
teacher's embeddings, ``student`` trains and evaluates the multilingual student."""
