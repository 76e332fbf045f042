"""duet_sdk: train DUET user encoders, export them and serve them on Triton Inference Server."""

__version__ = "0.1.0"
