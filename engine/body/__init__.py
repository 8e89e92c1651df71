"""The body: joint sets, bone maps, armature kinematics and the SMPL body model (file, skinning, joints, prior, fit)."""
