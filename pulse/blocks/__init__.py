"""Sequence-model building blocks in three families: generic layers, the PULSE slot family, other mixers."""
