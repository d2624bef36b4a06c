"""A process's own peak resident memory, for the benchmarks and the memory tests.

`getrusage`'s ru_maxrss carries the parent's peak across exec, so a child started by a
process that had trained a model reports that parent's peak; VmHWM is the process's own.
"""

from pathlib import Path


def peak_rss(pid: int | str = "self") -> int:
    """Bytes: the peak resident set of this process (or of `pid`) (Linux /proc/PID/status, VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
