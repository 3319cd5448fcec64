"""Process CPU time, system time and page faults of the M-Former and the post-processing (issue 22).

Runs the engine as ``bench/profile_embedded.py`` does (same model choice, same sample targets) without
cProfile, and wraps ``MFormer.forward`` and ``TileOutput.from_raw`` to add up, per target, their process
CPU time (``time.process_time``: user + system), their system time and their minor page faults
(``resource.getrusage``). Page faults are what fresh large tensors cost the first time they are written
(the kernel maps and zeroes every 4-KB page); the per-stage numbers show how much of a stage that is.

Usage::

    OMP_NUM_THREADS=1 python bench/profile_stages.py --model proxy --crop 0 --set pad=896 --targets 6
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import profile_embedded  # noqa: E402


def _wrap(owner: object, name: str, totals: list[float], classmethod_: bool = False) -> None:
    inner = getattr(owner, name).__func__ if classmethod_ else getattr(owner, name)

    def timed(*args, **kwargs):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            after = resource.getrusage(resource.RUSAGE_SELF)
            totals[0] += time.process_time() - start
            totals[1] += after.ru_stime - before.ru_stime
            totals[2] += after.ru_minflt - before.ru_minflt

    setattr(owner, name, classmethod(timed) if classmethod_ else timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sine-embedded", help="as for profile_embedded.py ('proxy', ...)")
    parser.add_argument("--targets", type=int, default=6)
    parser.add_argument("--crop", type=int, default=profile_embedded.CROP, help="0: whole 520×696 images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Propagator keywords")
    args = parser.parse_args()

    import torch

    from sine_model.engine import stitching
    from sine_model.modeling.mformer import MFormer

    torch.set_num_threads(args.threads)
    profile_embedded.MODEL = args.model
    options = {k: profile_embedded._value(v) for k, v in (item.split("=", 1) for item in args.set)}
    stages = {"M-Former": [0.0, 0.0, 0], "post-processing": [0.0, 0.0, 0]}
    _wrap(MFormer, "forward", stages["M-Former"])
    _wrap(stitching.TileOutput, "from_raw", stages["post-processing"], classmethod_=True)
    ref, ref_labels, targets, _ = profile_embedded.sample_crops(args.targets + 1, args.crop)
    prop = profile_embedded.build(options)
    prop.set_references([(ref, ref_labels)])
    modes = ("id", "instance", "semantic")
    for _ in prop.propagate(np.stack(targets[:1]), modes=modes, stack_axis=0):  # warm-up
        pass
    for totals in stages.values():
        totals[:] = [0.0, 0.0, 0]
    load0 = os.getloadavg()[0]
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    for _ in prop.propagate(np.stack(targets[1:]), modes=modes, stack_axis=0):
        pass
    after, total = resource.getrusage(resource.RUSAGE_SELF), time.process_time() - start
    n = args.targets
    print(f"model {args.model}, {n} targets, threads {args.threads}, options {options}; "
          f"load (1 min) {load0:.2f} / {os.getloadavg()[0]:.2f}")
    system, faults = (after.ru_stime - before.ru_stime) / n, (after.ru_minflt - before.ru_minflt) // n
    print(f"  whole run        {total / n:.3f} s CPU per target (system {system:.3f} s, "
          f"{faults} page faults)")
    for name, (cpu, system, faults) in stages.items():
        print(f"  {name:16s} {cpu / n:.3f} s CPU per target (system {system / n:.3f} s, "
              f"{faults // n} page faults)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
