"""Explain a whole dataset: resumable sharded outputs, several methods per pass, torchrun across GPUs and nodes.

``explain_dataset(source, model, methods, out)`` writes the maps (safetensors shards), an index (Parquet or JSON
lines) and a manifest; ``open_results(out)`` reads them back. See :mod:`.runner` for the pipeline and the layout.
"""

from .results import Results as Results
from .results import SampleResult as SampleResult
from .results import open_results as open_results
from .runner import RunSummary as RunSummary
from .runner import explain_dataset as explain_dataset
from .sources import ImageFiles as ImageFiles
from .sources import list_images as list_images

__all__ = ["ImageFiles", "Results", "RunSummary", "SampleResult", "explain_dataset", "list_images", "open_results"]
