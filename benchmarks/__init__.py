"""Throughput, overhead, memory, packing and scaling measurements of cldst (not tests)."""
