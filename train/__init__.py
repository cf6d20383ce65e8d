"""SANA-Video LoRA trainer: manifest, cache, flow matching, LoRA, loop, validation, experiments."""

import logging as _logging

# bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional 4-bit CPU kernel
# package is missing; we never use 4-bit CPU matmuls, so keep that out of users' terminals.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
