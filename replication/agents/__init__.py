"""Training agents: environments, online SAC, datasets, offline learners, fine-tuning methods, evaluation."""
