"""Neural actors: bone-Gaussian latent renderer + decoder, model files, training, evaluation.

``engine.actor.model.Actor`` is the network, ``engine.actor.model_file`` reads and
writes actor folders (``actor.safetensors`` + ``actor.json``), ``engine.actor.train``
trains one on a capture folder and ``engine.actor.evaluate`` scores it on held-out
cameras and frames.
"""
