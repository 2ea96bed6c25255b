"""codesign: hardware/algorithm co-design search for DNN accelerators (orchestration layer)."""

__version__ = "0.1.0"
