"""Environment for subprocesses whose results are compared bit for bit with another process's."""

import os

# Used by the kill-and-resume and restart tests.
# MKL's default CPU matrix kernels depend on memory alignment, which differs between processes, so two
# processes can disagree in the last bits (measured here: 2 of 24 identical backward passes). MKL's
# reproducible mode fixes that: AVX2,STRICT gave 64/64 identical gradients, AUTO,STRICT and AVX512,STRICT did
# not. Only these tests use it: it changes reduction orders, and it is slower.
REPRODUCIBLE_ENV = {**os.environ, "MKL_CBWR": "AVX2,STRICT"}
