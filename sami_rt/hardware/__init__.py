"""What this machine has: its usable CPUs and the share the video pipeline leaves (``cpus``), its GPU's name
(``gpu``)."""
