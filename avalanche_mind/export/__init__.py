"""Export a trained MIND checkpoint to a self-contained file, verified against the Predictor.

:mod:`.artefact` writes and checks the file, :mod:`.graph` builds the module that is
traced (one sub-network, or every sub-network and the task choice), :mod:`.formats`
writes ONNX, torch.export (.pt2) or TorchScript (deprecated). The command line is :mod:`avalanche_mind.cli.export`.
"""
from avalanche_mind.export.artefact import (
    ExportError,
    ExportReport,
    VerificationError,
    export_checkpoint,
    reference,
    verify,
)

__all__ = ["ExportError", "ExportReport", "VerificationError", "export_checkpoint", "reference", "verify"]
