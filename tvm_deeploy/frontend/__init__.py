"""Frontend: model files (ONNX) -> Relax IRModules."""
