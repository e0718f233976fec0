"""The ``sami-rt`` command line: ``main`` holds the group and the sampling commands, a module per other command.

The commands import their machinery inside the command (the runtime and onnxruntime, OpenCV, matplotlib,
Ray): `sami-rt --help` and a refused option answer in about 0.35 s instead of loading all of it first, and
a missing optional package is one line from the command that needs it. That is the reason for the
function-local imports in this package; elsewhere in sami_rt each one names its own."""
