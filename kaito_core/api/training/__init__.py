"""The tuning recipe's ``training_config.yaml``: schema, upstream's defaults, key decisions and
errors. Standard library and the contract types only (no torch), so the admission webhook and
the planner refuse what the tuning Job would refuse, and the recipe (:mod:`kaito_core.tuning`)
reads the same definitions."""
