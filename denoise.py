#!/usr/bin/env python
"""Train an Equiformer to denoise protein backbones; see ``python denoise.py --help``.

    python denoise.py                                   # small preset, embedded set, ~3 min on 2 CPU cores
    python denoise.py --preset large                    # for a GPU
    python denoise.py --out runs/denoise --resume       # continue after Ctrl-C
    torchrun --nproc_per_node 2 denoise.py ...          # data-parallel (gloo on CPU, NCCL on GPU)

The training code lives in ``equiformer.training``.
"""

import sys

from equiformer.training.extras import exit_if_missing_extras

if __name__ == "__main__":
    exit_if_missing_extras()  # one line and status 1 without the [denoise] extra, no traceback
    from equiformer.training import main

    sys.exit(main())
