"""Video: frames decoded and checked (``frames``), encoded through the model (``encode``) and the straightness of
the trajectories (``trajectory``)."""
