"""The pure domain of keyledger: events, commands and the rules that turn one into the other.

Nothing here does I/O; the shell (`service/`) loads a stream, calls `decide`, and appends.
"""
