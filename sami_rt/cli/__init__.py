"""The ``sami-rt`` command line: ``main`` holds the group and the sampling commands, a module per other command."""
