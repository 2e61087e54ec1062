"""A sweep job's config (its store, experiment and run name) and how many jobs run at
once, from Hydra's config nodes alone; the MLflow URL the report prints."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from activelearn.config import Config
from activelearn.rounds import sweep as sweep_module
from activelearn.rounds.sweep import RUN_NAME, job_config, parallel_jobs
from activelearn.tracking.tracker import ui_command


def hydra_node(tmp_path: Path, overrides: str):
    return OmegaConf.create(
        {
            "sweep": {"dir": str(tmp_path / "own"), "subdir": overrides},
            "job": {"override_dirname": overrides},
        }
    )


def test_a_job_logs_into_the_sweeps_store_and_experiment_under_its_swept_settings(tmp_path):
    node = hydra_node(tmp_path, "data=folder,seed=0,strategy=hybrid")
    folder = tmp_path / "own" / "data=folder,seed=0,strategy=hybrid"
    folder.mkdir(parents=True)
    (folder / RUN_NAME).write_text("strategy=hybrid,seed=0\n")
    job = job_config(Config(), node)
    assert job.workspace == str(folder / "campaign")
    assert job.tracking.uri == f"sqlite:///{tmp_path / 'own' / 'mlruns.db'}"
    assert job.tracking.experiment == "own"
    assert job.tracking.run_name == "strategy=hybrid,seed=0"


def test_a_server_or_a_named_experiment_is_kept(tmp_path):
    node = hydra_node(tmp_path, "seed=1")
    cfg = Config()
    cfg.tracking.uri, cfg.tracking.experiment = "http://127.0.0.1:5000", "shared"
    job = job_config(cfg, node)
    assert (job.tracking.uri, job.tracking.experiment) == ("http://127.0.0.1:5000", "shared")
    assert job.tracking.run_name == "seed=1"  # no record: the job's folder name


@pytest.mark.parametrize(
    ("launcher", "jobs", "cores", "expected"),
    [
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 6, 2, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 2}, 6, 2, 2),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": -1}, 6, 4, 4),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": -2}, 6, 4, 3),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 8}, 3, 16, 3),
    ],
)
def test_jobs_at_once(monkeypatch, launcher, jobs, cores, expected):
    monkeypatch.setattr(sweep_module, "available_cores", lambda: cores)
    assert parallel_jobs(OmegaConf.create(launcher), jobs) == expected


def test_the_ui_command_opens_the_model_training_chart_view():
    local = ui_command("sqlite:////s/own/mlruns.db", "3")
    assert local.startswith("mlflow ui --backend-store-uri sqlite:////s/own/mlruns.db")
    chart = "#/experiments/3/runs?workflowType=machine_learning&compareRunsMode=CHART"
    campaigns_only = "&searchFilter=tags.%60activelearn.run%60%20%3D%20%27campaign%27"
    assert local.endswith(f"http://127.0.0.1:5000/{chart}{campaigns_only}")
    assert ui_command("http://h:5000/", "3") == f"open http://h:5000/{chart}{campaigns_only}"
