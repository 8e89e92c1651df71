"""File readers and writers of the capture side: calibration formats, 2D keypoint files, skeleton files, capture folders."""
