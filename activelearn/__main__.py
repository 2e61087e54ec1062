"""`python -m activelearn [overrides]`: the Hydra entry point; thin by design."""

import logging
import sys

import hydra

from activelearn.config import Config, register_configs

log = logging.getLogger("activelearn")

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from omegaconf import OmegaConf

    from activelearn.workspace import PipelineFailed, run_pipeline

    config: Config = OmegaConf.to_object(cfg)
    try:
        metrics = run_pipeline(config)
    except PipelineFailed as err:
        log.error("%s", err)
        sys.exit(1)
    print(
        f"test accuracy {metrics['accuracy']:.4f} (macro F1 {metrics['macro_f1']:.4f}) "
        f"on {metrics['test_images']} test images, trained on {metrics['labeled_images']} labels"
    )


if __name__ == "__main__":
    main()
