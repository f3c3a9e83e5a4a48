"""What a step runs on: processes (DDP), the device, and the helpers every loop over batches shares.

Below training and evaluation: both import it, it imports neither."""
