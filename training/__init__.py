"""PyTorch training, streaming data loader and ONNX export (arrives with the training issue)."""
