"""Coefficient sweeps (`mcub sweep`): a grid over model arguments, each point an ordinary run directory, every
point sharing one feature cache so that only the LLM reruns; one table, one plot and the selection of a point."""
