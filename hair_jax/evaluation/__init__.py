"""Evaluation: metrics, the paper's protocol, tables and result files, the GIV analysis."""
