"""naf-export: take NAF (Neighborhood Attention Filtering) from PyTorch to the edge."""

from .attention import cross_scale_neighborhood_attention, nearest_exact_source, neighborhood_index
from .checkpoint import CheckpointError, load_naf
from .model import NAF

__version__ = "0.1.0"

__all__ = [
    "NAF",
    "CheckpointError",
    "cross_scale_neighborhood_attention",
    "load_naf",
    "nearest_exact_source",
    "neighborhood_index",
    "__version__",
]
