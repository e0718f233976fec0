"""Sampling: the noise schedule and each sampler's coefficients (``schedule``), the Philox streams (``rng``) and
the loop that runs them (``loop``: the compiled C++ loop, or its numpy twin)."""
