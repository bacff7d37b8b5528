"""Generation: resumable batched generation, the policy's sampling, prompt templates (the model backends are
judgeflow.models).
"""
