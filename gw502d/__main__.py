"""``python -m gw502d``."""

from gw502d.cli import console

console()
