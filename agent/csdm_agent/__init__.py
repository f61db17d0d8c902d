"""csdm-agent: pull a registered csdm policy and play with it at the dataset's frame rate."""

__version__ = "0.1.0"
