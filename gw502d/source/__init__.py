"""Source: follow log files (rotation, truncation, restarts) and split them into lines.

The first stop of a line: :class:`Follower` reads the files of each :class:`LogSpec` and
hands complete lines to the parser; :class:`LineSplitter` is the block-to-lines step that
``gw502d scan`` shares.
"""

from gw502d.source.follower import Follower, LinesCallback, LogSpec, LogStats
from gw502d.source.lines import BLOCK_SIZE, LineSplitter, iter_lines

__all__ = ["BLOCK_SIZE", "Follower", "LineSplitter", "LinesCallback", "LogSpec", "LogStats",
           "iter_lines"]
