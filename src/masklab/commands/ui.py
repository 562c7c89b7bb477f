"""`masklab ui`: the MLflow UI for the configured store, on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys

from omegaconf import DictConfig

from masklab.console import result


def ui(cfg: DictConfig) -> None:
    from masklab.tracking.runs import is_local_store, prepare_store

    uri = cfg.logger.tracking_uri
    if not is_local_store(uri):
        result(f"The tracking store is a server already: open {uri}", __name__)
        return
    prepare_store(uri)
    result(f"MLflow UI for {uri} at http://{cfg.host}:{cfg.port}  (Ctrl-C stops it)", __name__)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    # MLflow's job runner (a runner and 7 huey consumer processes, for its GenAI scorers and trace roll-ups) costs
    # 13 s of CPU at every start on 2 cores and serves nothing masklab logs; a user who wants it sets the variable.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", str(cfg.host),
           "--port", str(cfg.port), "--workers", str(cfg.workers)]
    try:
        subprocess.run(cmd, env=env, check=False)
    except KeyboardInterrupt:
        pass
