"""From 2D keypoints to 3D joints: subject association, triangulation, self-calibration, filtering, the reconstruct pipeline."""
