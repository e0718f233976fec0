"""Export of trained SAMI models to ONNX graphs (and TensorRT engines) in a versioned model bundle."""
