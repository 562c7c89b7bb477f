"""Everything MLflow: run logging, artifacts, the local store. No other module imports mlflow."""
