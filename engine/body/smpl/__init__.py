"""The SMPL body model: model files, skinning, joint correspondences, pose prior, fitting and SMPL motion files."""
