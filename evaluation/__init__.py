"""Evaluation above the index job and the serving app: labelled datasets, retrieval and answer
evaluation, judges, the CI gate and the Ray Data answer job. It imports both; neither imports it."""
