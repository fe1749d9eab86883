"""Baselines of the paper's comparison (§4.3): reward model, PPO-RLHF (+RLOO), RRHF, RAFT, DPO."""
