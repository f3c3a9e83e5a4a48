"""Generic layers: softmax attention, MLPs, norms, positions."""
