"""Training package of sami-rt (PyTorch): data, networks, the SAMI objective, the loop, evaluation."""
