"""convc.passes: graph-to-graph rewrites and the pipeline that runs them."""
from .pipeline import Instrument, Pass, Pipeline, default_pipeline

__all__ = ["Instrument", "Pass", "Pipeline", "default_pipeline"]
