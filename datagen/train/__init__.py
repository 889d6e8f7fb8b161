"""GAN training for the digipath UNet: data, augmentation, losses and the loop, one file each."""

from .config import TrainConfig, load_train_config
from .loop import train

__all__ = ["TrainConfig", "load_train_config", "train"]
