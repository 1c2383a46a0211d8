"""Ablation sweeps: each module has get_config() (the base run) and get_sweep() (a list of
{dotted.field: value} overrides). Expand and run them with launch/sweep.py."""
