"""Runtime: the loops, processes, progress, checkpoints and run outputs."""
