"""Claude runs: the run machine, its process and stdin channel, the command, the
process tree, and the executor that accepts runs in projects."""
