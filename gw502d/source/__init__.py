"""Source: follow log files (rotation, truncation, restarts) and split them into lines.

The first stop of a line: :class:`~gw502d.source.follower.Follower` reads the files of each
``LogSpec`` and hands complete lines on; :class:`~gw502d.source.lines.LineSplitter` is the
block-to-lines step that ``gw502d scan`` shares. Import from the submodules: ``scan`` must
not pay for watchdog at start-up.
"""
