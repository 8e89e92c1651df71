"""Geometry core: rotations, axes and the camera model. Imports nothing else of the engine."""
