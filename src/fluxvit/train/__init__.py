"""Training: configs, objectives (fixed-grid, Flux, Flux-Multi, distillation), the loop."""

from fluxvit.train.config import TrainConfig, config_from_dict, load_config, save_config
from fluxvit.train.trainer import TrainingError, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "config_from_dict", "load_config", "save_config", "train"]
