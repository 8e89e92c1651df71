"""Scenes: rendering shots of bound actors, compositing, skeleton previews, camera rings and orbits."""
