"""Neural actors: bone-Gaussian latent renderer + decoder, model files, training, evaluation.

``engine.neural.actor.model.Actor`` is the network, ``engine.neural.actor.model_file`` reads and
writes actor folders (``actor.safetensors`` + ``actor.json``), ``engine.neural.actor.train``
trains one on a capture folder and ``engine.neural.actor.evaluate`` scores it on held-out
cameras and frames.
"""
