"""activelearn: active-learning campaigns for image classification."""

import os

__version__ = "0.1.0"

# No usage reports to the tools' vendors on the user's behalf, from this process or the
# ones it starts (DVC, Ray, a retrain); a variable set beforehand is left as it is.
NO_USAGE_REPORTS = {
    "BENTOML_DO_NOT_TRACK": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
for _name, _value in NO_USAGE_REPORTS.items():
    os.environ.setdefault(_name, _value)
