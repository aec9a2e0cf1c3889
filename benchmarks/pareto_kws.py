# SPDX-License-Identifier: Apache-2.0
# DS-CNN on the synthesized keyword-spotting set: the joint front against every baseline.
"""Pareto benchmark on the keyword-spotting set.

DS-CNN on the espeak-ng keyword-spotting set (zerobit.data.kws: 12 classes, 12,000 training clips
of which 10 % are held out for validation, 3000 test clips by unseen voices), weights (0, 2, 4, 8)
per channel and 8-bit activations, driven by the size cost. The same methods and protocol as
pareto_fashion_mnist.py. The set is synthesized and cached on first use. Run:

    python benchmarks/pareto_kws.py --out benchmarks/results/pareto_kws
"""

from __future__ import annotations

from _pareto import cli

if __name__ == "__main__":
    cli(
        __doc__ or "",
        "kws",
        "dscnn",
        0,
        "20,6,3",
        "benchmarks/results/pareto_kws",
        warmup_patience=3,
    )
