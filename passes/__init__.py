"""convc.passes: graph-to-graph rewrites and the pipeline that runs them."""
from .pipeline import PASS_NAMES, Instrument, Pass, Pipeline, default_pipeline

__all__ = ["PASS_NAMES", "Instrument", "Pass", "Pipeline", "default_pipeline"]
