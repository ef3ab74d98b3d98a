from .gradient_sampling import GradientSampling
from .laplacian import LaplacianSmoothing

__all__ = ["GradientSampling", "LaplacianSmoothing"]
