"""Video ingestion: synchronised videos + calibration -> a training capture folder.

``video`` (probing, pairing, size reconciliation), ``detector`` (MediaPipe BlazePose pose +
segmentation), ``subjects`` (several people across cameras and time), ``crops`` (undistorted
square crops and their cameras), ``masks`` (skeleton-seeded refinement and quality) and
``pipeline`` (the stages of ``marionette ingest``).
"""
