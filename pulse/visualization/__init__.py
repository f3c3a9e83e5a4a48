"""Pictures of what PULSE models compute: slot dynamics, slot similarity, routing, allocation, attention.

    from pulse.visualization import StateVisualizer, AttentionVisualizer, capture

All figures are drawn with matplotlib's Agg backend (files, never a window). `capture`
records weights during a forward without changing any output; off, it costs nothing.
"""

from pulse.visualization.attention import AttentionVisualizer
from pulse.visualization.capture import RECORDS, Capture, capture
from pulse.visualization.state import StateTrace, StateVisualizer

__all__ = ["RECORDS", "AttentionVisualizer", "Capture", "StateTrace", "StateVisualizer", "capture"]
