"""deepmine.export — torch → ONNX with deepmine metadata, parity checks, optimisation, quantisation."""
