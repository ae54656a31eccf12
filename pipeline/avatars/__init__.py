"""Avatar stage: safe fetch and decode, face check, ONNX AI-face detector, training."""
