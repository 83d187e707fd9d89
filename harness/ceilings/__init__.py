"""Measured ceilings: the fastest GEMM per dtype, the bandwidth of each memory level and the copy
bandwidth of main memory, measured on this machine with ``harness.timing`` and stored per machine,
thread count and software (``calibrate``)."""
