"""The ground floor every layer may use: errors, console output, files (atomic writes, JSON readers),
and the append-only journal that makes long jobs resumable."""
