"""PyTorch parts of ProxMO: the LLM RLModule, the PPO learner and model loading."""
