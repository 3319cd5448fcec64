"""Op-level profile of the M-Former alone at the official grid (issue 22; run by hand).

Builds the official-size ``MFormer`` (256 wide, 6 blocks, 200 queries; random weights), decodes one
target of neck features at grid ``--grid`` (64 = P 896 with patch 14) against ``--ids`` ID tokens and
``--classes`` prototypes, exactly as the engine does (``return_aux=False``), and prints the CPU seconds
of one call (``time.process_time``, after a warm-up call) and the ``torch.profiler`` table of the ops
with the most own time, grouped by input shape. Use ``--threads 1`` and say the machine's load.

Usage::

    OMP_NUM_THREADS=1 python bench/profile_mformer.py --threads 1 --ids 30
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sine_model.modeling.context import ReferenceTokens
from sine_model.modeling.mformer import MFormer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=int, default=64, help="feature grid side g (masks at 4g)")
    parser.add_argument("--ids", type=int, default=30, help="ID tokens N")
    parser.add_argument("--classes", type=int, default=2, help="semantic prototypes M")
    parser.add_argument("--rows", type=int, default=20, help="rows of the op table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MFormer().eval()
    features = torch.randn(1, 256, args.grid, args.grid)
    tokens = ReferenceTokens(
        torch.randn(args.ids, 256), torch.randn(args.classes, 256), torch.arange(args.ids),
        torch.zeros(args.ids, dtype=torch.long), torch.arange(args.classes),
    )
    print(f"load (1 min) before: {os.getloadavg()[0]:.2f}")
    with torch.no_grad():
        model(features, tokens, return_aux=False)  # warm-up
        start = time.process_time()
        model(features, tokens, return_aux=False)
        print(f"M-Former, one call: {time.process_time() - start:.3f} s CPU "
              f"(grid {args.grid}, N {args.ids}, M {args.classes}, threads {args.threads})")
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model(features, tokens, return_aux=False)
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=30,
        max_shapes_column_width=70))
    print(f"load (1 min) after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
