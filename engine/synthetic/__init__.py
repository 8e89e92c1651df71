"""Synthetic data: MakeHuman bodies and motions for synthetic captures, toy captures, SMPL and skeleton fixtures."""
