"""Export: a model directory (encoder.onnx, decoder.onnx, manifest.json) for the runtime, and
an official-format SAM checkpoint for other SAM tools and runs.

Importing this package imports torch, onnx and onnxruntime; the runtime reads the model
directory without it.
"""

from geosam.export.checkpoint_export import export_checkpoint
from geosam.export.metadata import read_metadata_props
from geosam.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, ExportResult, export_onnx
from geosam.export.parity import check_parity
from geosam.runtime.model import DECODER, ENCODER, INT8, MANIFEST, MODEL_FORMAT

__all__ = [
    "DECODER",
    "DEFAULT_OPSET",
    "ENCODER",
    "INT8",
    "MANIFEST",
    "MIN_OPSET",
    "MODEL_FORMAT",
    "ExportResult",
    "check_parity",
    "export_checkpoint",
    "export_onnx",
    "read_metadata_props",
]
