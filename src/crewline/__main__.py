"""``python -m crewline``: the same as the ``crewline`` command."""

from .cli import main

main()
