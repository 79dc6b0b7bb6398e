"""Training and evaluation of refrestore's networks, beside the runtime: ``fix`` imports none of it.

The training loop (``train``, also ``python -m refrestore.training.train`` on a bare machine),
its losses, discriminator, samplers (``data``), data packs and folders, the damage of real photos,
the held-out evaluation and its metrics, the identity embedder's trainer and the MobileFaceNet
fine-tune. What the restorers run at ``fix`` time (the architecture, warping, weight files) is in
``refrestore/net/``, below both.
"""
