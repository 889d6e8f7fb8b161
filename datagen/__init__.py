"""datagen: annotated segmentation data from activation vectors painted into a GAN's hidden layer."""

__version__ = "0.1.0"
