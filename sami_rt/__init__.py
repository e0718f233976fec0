"""sami-rt: the runtime of SAMI (score-based autoencoder for multiscale inference).

This package never imports torch. Its numerical core (noise schedules) is shared with
the training code in ``train/`` so that training, export and runtime cannot disagree.
"""

__version__ = "0.1.0"
