from .clipping import ClipNorm, ClipValue, Normalize

__all__ = ["ClipNorm", "ClipValue", "Normalize"]
