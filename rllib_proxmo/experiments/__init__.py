"""Running experiments: the main job, the Ray Tune runner of ``tuned_examples/``, the run
sizes, result tables, MLflow tracking, plots and the report."""
