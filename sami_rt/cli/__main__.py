"""``python -m sami_rt.cli``: the ``sami-rt`` command."""

from sami_rt.cli.main import main

main()
