# SPDX-License-Identifier: Apache-2.0
# Public API of the cost models: LayerSpec, the registered cost functions and the registry.
from zerobit.cost.counts import bitops, macs, size
from zerobit.cost.evaluate import evaluate
from zerobit.cost.flash import flash, flash_graph_bytes
from zerobit.cost.graph import GraphSpec, OpSpec, TensorSpec, get_graph_term, total_cost
from zerobit.cost.mpic import MPIC_THROUGHPUT, mpic, mpic_supported_bits
from zerobit.cost.ne16 import ne16, ne16_latency
from zerobit.cost.ram import plan_arena, ram, ram_graph_bytes
from zerobit.cost.registry import (
    CostFunction,
    get_cost,
    register_cost,
    registered_costs,
    resolve_cost,
)
from zerobit.cost.spec import LayerSpec, Number
from zerobit.cost.table import CostTable, table

__all__ = [
    "MPIC_THROUGHPUT",
    "CostFunction",
    "CostTable",
    "GraphSpec",
    "LayerSpec",
    "Number",
    "OpSpec",
    "TensorSpec",
    "bitops",
    "evaluate",
    "flash",
    "flash_graph_bytes",
    "get_cost",
    "get_graph_term",
    "macs",
    "mpic",
    "mpic_supported_bits",
    "ne16",
    "ne16_latency",
    "plan_arena",
    "ram",
    "ram_graph_bytes",
    "register_cost",
    "registered_costs",
    "resolve_cost",
    "size",
    "table",
    "total_cost",
]
