"""Training: data -> objective -> step -> loop, and the run state around it (checkpoints, metrics, resume)."""
