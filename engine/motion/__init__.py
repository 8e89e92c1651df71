"""Motion of skeletons over time: resampling and retargeting onto armatures."""
