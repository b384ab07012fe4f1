"""vmap rules of the loops and branches (scan, while_loop, switch), and the
fallback for primitives without a rule: a scan over the batch.
"""
