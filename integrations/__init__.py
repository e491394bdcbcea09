"""Adapters for other stacks, installed as ``deramos_reward.integrations``.

Each submodule imports its stack lazily, so ``import deramos_reward`` never needs
audiocraft, peft or trl.
"""
