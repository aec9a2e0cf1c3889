# SPDX-License-Identifier: Apache-2.0
# ResNet-8 on Fashion-MNIST: the joint search's size/accuracy front against every baseline.
"""Pareto benchmark on Fashion-MNIST.

ResNet-8 on a training subset of Fashion-MNIST (validation: 6000 held-out training images; test:
the 10,000 test images), weights (0, 2, 4, 8) per channel and 8-bit activations, driven by the
size cost. Per seed: one shared float warm-up, then the joint search at a ladder of size budgets,
w8a8/w4a8/w2a8, pruning only, layer-wise mixed precision and the sequential flow, every phase with
the same epochs. Interrupted runs resume. Run:

    python benchmarks/pareto_fashion_mnist.py --out benchmarks/results/pareto_fashion_mnist
"""

from __future__ import annotations

from _pareto import cli

if __name__ == "__main__":
    out = "benchmarks/results/pareto_fashion_mnist"
    cli(__doc__ or "", "fashion-mnist", "resnet8", 4000, "20,4,2", out, warmup_patience=3)
