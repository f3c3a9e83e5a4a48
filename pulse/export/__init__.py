"""A trained model out to other runtimes: ONNX (`pulse.export.onnx`) and a Hugging Face directory
(`pulse.export.hf`). `pulse export` calls into here."""
