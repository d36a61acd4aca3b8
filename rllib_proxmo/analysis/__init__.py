"""Offline analysis of rollouts: the Parquet step format and PSA similarity tuning."""
