"""Neural actors: the Gaussian-primitive renderer (render/) and the learned actor model, training and evaluation (actor/)."""
