"""Pure functions over the cube (xarray, numpy, matplotlib): no torch, no models."""
from .figures import loss_curve, save, step_layer_heatmap

__all__ = ["step_layer_heatmap", "loss_curve", "save"]
