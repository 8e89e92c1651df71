"""Blender-side builder of synthetic captures (runs standalone on the bpy module:
``python -m addon.synthetic.make_capture --help``)."""
