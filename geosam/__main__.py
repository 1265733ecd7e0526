"""``python -m geosam`` (and ``torchrun -m geosam``) runs the CLI."""

from geosam.cli import main

main()
