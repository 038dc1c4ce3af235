"""Recurrent encoder-decoders for neural machine translation, with PyTorch Lightning."""

__version__ = "0.1.0"
